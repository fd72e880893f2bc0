//! What a connection has sent but not written yet. Values (`DATA` and
//! `ERROR` frames) that follow each other within a bound
//! ([`DEFAULT_FLUSH_AFTER`]) are gathered into one write of up to
//! [`FLUSH_AT`] bytes; any other frame writes them out with it, and so
//! does every receive before it waits. One thread per process writes out
//! what a sender left waiting longer than its bound, so a value never
//! waits long while its sender computes.

use std::cell::Cell;
use std::ops::{Deref, DerefMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, TryLockError, Weak};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags};
use nix::sys::socket::{MsgFlags, send, sendmsg};
use serde::Serialize;

use super::codec::{self, HEADER, Hole};
use super::frame::tag;
use super::log;
use super::wait::{Deadline, poll_until};
use crate::error::{Error, Result, with_causes};
use crate::lock::{Slot, Taken, lock, wait, wait_timeout};

/// How long a value may wait in its sender's buffer, by default, before
/// the process's flusher writes it out.
///
/// A value sent on a [`Channel`](crate::Channel) or a
/// [`Handle`](crate::Handle) after a pause this long is written at once;
/// values that follow it closely are gathered into one write of up to
/// 64 KiB. They go out when the buffer fills, when the sender waits to
/// receive, on [`Channel::flush`](crate::Channel::flush) or
/// [`Handle::flush`](crate::Handle::flush), with the frame that ends a
/// call (so a child's values all precede its result or its panic), and
/// once the oldest has waited this long. `set_flush_after` changes the
/// bound of one end; [`Duration::ZERO`] writes every value at once.
pub const DEFAULT_FLUSH_AFTER: Duration = Duration::from_millis(1);

/// Bytes waiting at which a send writes them out.
pub(crate) const FLUSH_AT: usize = 64 * 1024;

thread_local! {
    /// Set while this thread encodes a frame into an outbox: a panic hook
    /// that would send on the same outbox finds it busy instead of waiting
    /// on itself.
    static ENCODING: Cell<bool> = const { Cell::new(false) };
}

/// The frames of one connection that are sent but not written, shared by
/// the connection, the ends that send without its lock, and the flusher.
#[derive(Debug)]
pub(crate) struct Outbox {
    fd: Arc<OwnedFd>,
    state: Mutex<Out>,
    /// Whether `state` holds bytes not written: read without the lock.
    dirty: AtomicBool,
    /// Values that follow others closely, which a sender appends without
    /// the lock (see [`Lane`]).
    lane: Slot<Lane>,
}

/// The short way for a stream of values: while values wait in the
/// buffer and the flusher looks at them in time, a sender that takes the
/// lane appends its value there, a swap and a store where the lock costs
/// two swaps. Whoever locks the state moves the lane's frames to the end
/// of the buffer first, so they keep their order with every other frame,
/// and sets whether the lane is open again when it unlocks.
#[derive(Debug, Default)]
struct Lane {
    /// Whole frames, sent after every byte in the state's buffer, at
    /// `buf[front..]`.
    buf: Vec<u8>,
    /// Room kept at the front for the bytes that wait in the state's
    /// buffer, so that the lane's frames join them without a copy: the
    /// buffers swap instead (see [`Locked::new`]).
    front: usize,
    /// Whether a sender may append here.
    open: bool,
    /// The bytes the lane holds before the buffer must be written out.
    room: usize,
}

/// The state of an [`Outbox`], locked, with its lane's frames moved in.
pub(crate) struct Locked<'a> {
    // The lane goes back before the lock is released.
    lane: Taken<'a, Lane>,
    out: MutexGuard<'a, Out>,
}

/// What an [`Outbox`] keeps under its lock.
#[derive(Debug)]
pub(crate) struct Out {
    /// The frames sent; `buf[head..]` is not written yet.
    buf: Vec<u8>,
    head: usize,
    /// When the oldest byte not written was sent.
    since: Option<Instant>,
    /// When bytes were last written (or the outbox made).
    written: Instant,
    /// How long a byte may wait; zero writes every frame at once.
    after: Duration,
    /// Whether the flusher looks at this outbox.
    queued: bool,
    /// The long byte runs of the frame being encoded.
    holes: Vec<Hole>,
    /// Why nothing more can be written, once that is so.
    dead: Option<Dead>,
    /// A worker's result log: the frames that end calls, and values, go
    /// there instead of into the buffer (see [`log`]).
    log: Option<log::Writer>,
}

/// Why an outbox can write no more.
#[derive(Clone, Debug)]
enum Dead {
    /// The peer closed its end.
    Gone,
    /// A frame was cut short.
    Cut(String),
    /// The socket failed.
    Os(Errno),
}

/// What [`Outbox::push`] did with a value.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// It waits in the buffer.
    Held,
    /// It is in the buffer, which must be written out now: it is full,
    /// or the sender had paused.
    Full,
    /// It was not taken: send it through the connection.
    Refused,
}

/// A frame encoded into an outbox's buffer: where it starts, and the
/// length of its payload, long byte runs included.
pub(crate) struct Frame {
    pub(crate) start: usize,
    pub(crate) len: usize,
}

impl Outbox {
    pub(crate) fn new(fd: Arc<OwnedFd>) -> Arc<Self> {
        Arc::new(Self {
            fd,
            state: Mutex::new(Out {
                buf: Vec::new(),
                head: 0,
                since: None,
                written: Instant::now(),
                after: DEFAULT_FLUSH_AFTER,
                queued: false,
                holes: Vec::new(),
                dead: None,
                log: None,
            }),
            dirty: AtomicBool::new(false),
            lane: Slot::new(Lane::default()),
        })
    }

    /// The state, or [`Error::Disconnected`] if this thread is encoding
    /// into it (a panic hook reporting a panic of that encoding).
    #[inline]
    pub(crate) fn lock(&self) -> Result<Locked<'_>> {
        if ENCODING.get() {
            return Err(Error::Disconnected);
        }
        Ok(self.lock_state())
    }

    /// The state, with the lane's frames moved in: a sender keeps the lane
    /// only while it appends one value.
    fn lock_state(&self) -> Locked<'_> {
        let out = lock(&self.state);
        Locked::new(out, self.lane.wait())
    }

    /// Whether values wait in the lane, for the tests of its order.
    #[cfg(test)]
    pub(crate) fn lane_holds_frames(&self) -> bool {
        self.lane
            .take()
            .is_some_and(|lane| lane.buf.len() > lane.front)
    }

    /// Whether bytes wait to be written.
    pub(crate) fn is_dirty(&self) -> bool {
        self.dirty.load(Ordering::Relaxed)
    }

    /// Sets how long a value may wait.
    pub(crate) fn set_after(&self, after: Duration) {
        self.lock_state().after = after;
    }

    /// Adds a `DATA` or `ERROR` frame holding `value` to the buffer, when
    /// the buffer takes it: not when values are written at once, and not
    /// a frame with long byte runs, which the connection writes from the
    /// value itself.
    pub(crate) fn push<T: Serialize + ?Sized>(
        self: &Arc<Self>,
        tag: u8,
        value: &T,
    ) -> Result<Pushed> {
        debug_assert!(coalesces(tag));
        if let Some(pushed) = self.push_lane(tag, value)? {
            return Ok(pushed);
        }
        let mut out = self.lock()?;
        // Values wait already: the flusher looks at them in time, and this
        // one only joins them (see `hold`).
        if out.head < out.buf.len()
            && out.log.is_none()
            && out.dead.is_none()
            && !out.after.is_zero()
            && out.encode_plain(tag, value)?
        {
            return Ok(if out.pending().len() < FLUSH_AT {
                Pushed::Held
            } else {
                Pushed::Full
            });
        }
        if out.after.is_zero() && out.log.is_none() {
            return Ok(Pushed::Refused);
        }
        out.check()?;
        let frame = out.encode(tag, value)?;
        if !out.holes.is_empty() {
            out.buf.truncate(frame.start);
            return Ok(Pushed::Refused);
        }
        if out.log.is_some() {
            match self.to_log(&mut out, tag, frame.start, false) {
                Some(true) => return Ok(Pushed::Full),
                Some(false) => return Ok(Pushed::Held),
                None => {}
            }
        }
        Ok(if self.hold(&mut out, frame.start) {
            Pushed::Held
        } else {
            Pushed::Full
        })
    }

    /// Appends a frame holding `value` to the lane, when it is open and
    /// the value has no long byte run; `None` if it was not taken.
    #[inline]
    fn push_lane<T: Serialize + ?Sized>(&self, tag: u8, value: &T) -> Result<Option<Pushed>> {
        if ENCODING.get() {
            return Err(Error::Disconnected);
        }
        let Some(mut lane) = self.lane.take() else {
            return Ok(None);
        };
        if !lane.open || !encode_frame(&mut lane.buf, tag, value)? {
            return Ok(None);
        }
        Ok(Some(if lane.buf.len() - lane.front < lane.room {
            Pushed::Held
        } else {
            Pushed::Full
        }))
    }

    /// For a worker's connection, which has a log: moves the frame at
    /// `start`, the last in the buffer, into the log if it takes it.
    /// `Some(true)` if the log was announced, and the buffer must be
    /// written now: the call is `over` (no call waits behind it), the
    /// frame comes after a pause, or the log's oldest frame waited its
    /// bound. `Some(false)` if the frame waits for its announcement, which
    /// the flusher makes in time. `None` if the log did not take it: the
    /// caller announces the log ahead of it ([`Out::announce_at`]).
    pub(crate) fn to_log(
        self: &Arc<Self>,
        out: &mut Out,
        tag: u8,
        start: usize,
        over: bool,
    ) -> Option<bool> {
        let Out {
            buf, log, written, ..
        } = out;
        let log = log.as_mut()?;
        let logged = matches!(
            tag,
            tag::DATA | tag::ERROR | tag::RESULT | tag::PANIC | tag::FAIL
        );
        let fresh = !log.pending();
        if !logged || !log.append(&buf[start..]) {
            return None;
        }
        buf.truncate(start);
        let now = Instant::now();
        let paused = fresh && now.saturating_duration_since(*written) >= out.after;
        if over || paused || out.after.is_zero() || log.overdue(out.after) {
            out.announce();
            return Some(true);
        }
        self.dirty.store(true, Ordering::Relaxed);
        if !out.queued
            && let Some(at) = log.since().and_then(|since| since.checked_add(out.after))
        {
            out.queued = Flusher::get().map(|f| f.queue(self, at)).is_some();
            if !out.queued {
                out.announce();
                return Some(true);
            }
        }
        Some(false)
    }

    /// Keeps the frame at `start`, the last in the buffer, waiting; false
    /// if the buffer must be written now (it is full, or no flusher
    /// would write it later).
    #[inline]
    pub(crate) fn hold(self: &Arc<Self>, out: &mut Out, start: usize) -> bool {
        if start == out.head {
            let now = Instant::now();
            if now.saturating_duration_since(out.written) >= out.after {
                // The first value after a pause goes out at once: only a
                // value that follows another closely waits for more.
                return false;
            }
            out.since = Some(now);
            self.dirty.store(true, Ordering::Relaxed);
            // A bound too far to reach is no bound: nothing to queue.
            if !out.queued
                && let Some(at) = now.checked_add(out.after)
            {
                out.queued = Flusher::get().map(|f| f.queue(self, at)).is_some();
                if !out.queued {
                    out.after = Duration::ZERO;
                    return false;
                }
            }
        }
        out.pending().len() < FLUSH_AT
    }

    /// Writes out what waits, waiting for room as long as it takes but
    /// reading nothing: for a thread that cannot read the connection, as
    /// another one does.
    pub(crate) fn flush_waiting(&self) -> Result<()> {
        let mut out = self.lock()?;
        if out.pending().is_empty() {
            return out.check();
        }
        let written = send_all(self.fd.as_fd(), [out.pending()], wait_for_room);
        self.done(&mut out, written)
    }

    /// After an attempt to write everything that waits: empties the buffer,
    /// or, on failure, marks the outbox dead.
    pub(crate) fn done(&self, out: &mut Out, written: Result<()>) -> Result<()> {
        match written {
            Ok(()) => {
                out.clear();
                out.written = Instant::now();
                self.dirty.store(false, Ordering::Relaxed);
                Ok(())
            }
            Err(err) => {
                out.kill(&err);
                self.dirty.store(false, Ordering::Relaxed);
                Err(err)
            }
        }
    }

    /// The flusher's look at this outbox at `now`: writes what waited too
    /// long, without waiting. Returns when to look again, `None` once
    /// nothing waits.
    fn flush_idle(&self, now: Instant) -> Option<Instant> {
        let out = match self.state.try_lock() {
            Ok(out) => out,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            // A sender holds it, and writes it out if it must.
            Err(TryLockError::WouldBlock) => return Some(now + DEFAULT_FLUSH_AFTER),
        };
        let mut out = out;
        // The log's frames wait for their announcement as the buffer's
        // bytes wait to be written: the earlier bound decides. The lane's
        // frames are newer than every byte of the buffer, and it holds some
        // only while the buffer does, so it is taken only to write.
        let log_due = out
            .log
            .as_ref()
            .filter(|log| log.pending())
            .and_then(log::Writer::since)
            .and_then(|since| since.checked_add(out.after));
        let buf_due = match out.since {
            Some(since) if !out.pending().is_empty() => since.checked_add(out.after),
            _ => None,
        };
        let Some(due) = [log_due, buf_due].into_iter().flatten().min() else {
            out.queued = false;
            return None;
        };
        if due > now {
            return Some(due);
        }
        // A sender appends to the lane: it is done in an instant.
        let Some(lane) = self.lane.take() else {
            return Some(now + LANE_BUSY);
        };
        let mut out = Locked::new(out, lane);
        let out = &mut *out;
        out.announce();
        if !self.write_now(out) {
            // The peer does not read: look again later.
            return Some(now + out.after.max(DEFAULT_FLUSH_AFTER));
        }
        out.queued = false;
        None
    }

    /// Writes out what waits, without waiting: what the socket takes now.
    /// Returns whether nothing waits any more.
    fn write_now(&self, out: &mut Out) -> bool {
        while !out.pending().is_empty() {
            match send(
                self.fd.as_raw_fd(),
                out.pending(),
                MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(n) => out.head += n,
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => return false,
                Err(err) => {
                    out.kill(&written_error(err));
                    break;
                }
            }
        }
        out.clear();
        out.written = Instant::now();
        self.dirty.store(false, Ordering::Relaxed);
        true
    }

    /// Adds a frame of `tag` holding `value` to the buffer whatever its
    /// size (its long byte runs copied in), and writes what the socket
    /// takes now, without waiting: for an async sender, which waits for
    /// room itself and writes the rest with [`flush_now`](Self::flush_now)
    /// ([`is_dirty`](Self::is_dirty) says whether bytes wait). The flusher
    /// writes the rest too, so a sender that stops waiting loses nothing.
    #[cfg(feature = "tokio")]
    pub(crate) fn push_nowait<T: Serialize + ?Sized>(
        self: &Arc<Self>,
        tag: u8,
        value: &T,
    ) -> Result<()> {
        let mut out = self.lock()?;
        out.check()?;
        if !out.encode_plain(tag, value)? {
            let payload = encoding(|| codec::encode(value))?;
            out.append(tag, &payload)?;
        }
        if !self.write_now(&mut out) {
            let now = Instant::now();
            out.since.get_or_insert(now);
            self.dirty.store(true, Ordering::Relaxed);
            if !out.queued {
                out.queued = Flusher::get().map(|f| f.queue(self, now)).is_some();
            }
        }
        out.check()
    }

    /// Writes out what the socket takes now of what waits, for a
    /// connection that goes away: a peer that does not read loses the
    /// rest, rather than keeping its sender waiting.
    pub(crate) fn flush_now(&self) {
        if let Ok(mut out) = self.lock() {
            out.announce();
            self.write_now(&mut out);
        }
    }
}

impl AsFd for Outbox {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Out {
    /// The bytes not written yet.
    #[inline]
    pub(crate) fn pending(&self) -> &[u8] {
        &self.buf[self.head..]
    }

    /// The buffer from `at` on.
    pub(crate) fn from(&self, at: usize) -> &[u8] {
        &self.buf[at..]
    }

    /// Where the bytes not written start in the buffer.
    pub(crate) fn head(&self) -> usize {
        self.head
    }

    /// The holes of the frame last encoded.
    pub(crate) fn holes(&self) -> &[Hole] {
        &self.holes
    }

    pub(crate) fn after(&self) -> Duration {
        self.after
    }

    /// Writes answers to `log` from now on.
    pub(crate) fn set_log(&mut self, log: log::Writer) {
        self.log = Some(log);
    }

    /// Starts the log again from its start, as the parent's `LOG` frame
    /// with `body` says.
    pub(crate) fn restart_log(&mut self, body: &[u8]) -> Result<()> {
        match self.log.as_mut() {
            Some(log) => log.restart(body),
            None => Err(Error::codec("a log restart for a child without a log")),
        }
    }

    /// Puts a `LOG` frame for what the log holds and the parent was not
    /// told of at `at` in the buffer: its end, or the start of a frame
    /// that did not go to the log, so that the parent reads everything in
    /// the order it was sent. Returns the bytes it put there.
    pub(crate) fn announce_at(&mut self, at: usize) -> usize {
        let Some(log) = self.log.as_mut().filter(|log| log.pending()) else {
            return 0;
        };
        let body = log.announce();
        let mut frame = [0; HEADER + 1 + 8];
        frame[..HEADER].copy_from_slice(&(1 + 8_u32).to_le_bytes());
        frame[HEADER] = tag::LOG;
        frame[HEADER + 1..].copy_from_slice(&body);
        if self.head == self.buf.len() && at == self.buf.len() {
            self.clear();
            self.buf.extend_from_slice(&frame);
        } else {
            self.buf.splice(at..at, frame);
        }
        frame.len()
    }

    /// Puts a `LOG` frame for what the log holds unannounced at the end
    /// of the buffer (see [`announce_at`](Self::announce_at)).
    pub(crate) fn announce(&mut self) -> usize {
        let end = self.buf.len();
        self.announce_at(end)
    }

    /// An error if nothing more can be written.
    #[inline]
    pub(crate) fn check(&self) -> Result<()> {
        match &self.dead {
            None => Ok(()),
            Some(Dead::Gone) => Err(Error::Disconnected),
            Some(Dead::Cut(why)) => Err(Error::codec(why)),
            Some(Dead::Os(errno)) => Err(Error::from_errno(*errno)),
        }
    }

    /// Appends a frame holding `value` serialized, but for its long byte
    /// runs (see [`codec::encode_gathered`]). On failure, and if encoding
    /// panics, the buffer is left as it was.
    #[inline]
    pub(crate) fn encode<T: Serialize + ?Sized>(&mut self, tag: u8, value: &T) -> Result<Frame> {
        let start = self.begin(tag);
        let mut guard = Rollback {
            out: self,
            start,
            armed: true,
        };
        let out = &mut *guard.out;
        out.holes.clear();
        let len = encoding(|| codec::encode_gathered(value, &mut out.buf, &mut out.holes))?;
        let header = codec::header(len + 1)?;
        out.buf[start..start + HEADER].copy_from_slice(&header);
        guard.armed = false;
        Ok(Frame { start, len })
    }

    /// Appends a frame holding `value` serialized, as
    /// [`encode`](Self::encode) does, if it has no long byte run: false,
    /// the buffer as it was, if it has one.
    #[inline]
    fn encode_plain<T: Serialize + ?Sized>(&mut self, tag: u8, value: &T) -> Result<bool> {
        encode_frame(&mut self.buf, tag, value)
    }

    /// How many bytes a sender may append to the lane before the buffer
    /// must be written out, if it may: as in [`Outbox::push`], while
    /// values wait already, and nothing else is due.
    fn lane_room(&self) -> Option<usize> {
        let waiting = self.pending().len();
        let open =
            waiting > 0 && self.log.is_none() && self.dead.is_none() && !self.after.is_zero();
        open.then(|| FLUSH_AT.saturating_sub(waiting))
            .filter(|&room| room > 0)
    }

    /// Appends a frame of `tag` and `payload`.
    pub(crate) fn append(&mut self, tag: u8, payload: &[u8]) -> Result<usize> {
        let header = codec::header(payload.len() + 1)?;
        let start = self.begin(tag);
        self.buf[start..start + HEADER].copy_from_slice(&header);
        self.buf.extend_from_slice(payload);
        Ok(start)
    }

    /// Starts a frame of `tag` at the end of the buffer, its length still
    /// zero; returns where it starts.
    #[inline]
    fn begin(&mut self, tag: u8) -> usize {
        if self.head == self.buf.len() {
            self.clear();
        }
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0, 0, 0, 0, tag]);
        start
    }

    /// Drops the frame that starts at `start`, the last in the buffer.
    pub(crate) fn drop_from(&mut self, start: usize) {
        self.buf.truncate(start);
    }

    fn clear(&mut self) {
        self.buf.clear();
        self.head = 0;
        self.since = None;
        if self.buf.capacity() > KEEP {
            self.buf = Vec::new();
        }
    }

    /// Nothing more can be written: `err` says why.
    pub(crate) fn kill(&mut self, err: &Error) {
        self.dead = Some(match err {
            Error::Disconnected => Dead::Gone,
            Error::Io(io) => io.raw_os_error().map_or_else(
                || Dead::Cut(with_causes(err)),
                |code| Dead::Os(Errno::from_raw(code)),
            ),
            other => Dead::Cut(with_causes(other)),
        });
        self.clear();
    }
}

/// The largest buffer an outbox keeps once it is written out: a longer
/// one (a large value that is not a byte run) is freed.
const KEEP: usize = 1 << 20;

/// The most bytes waiting in an outbox's buffer that its lane keeps room
/// for at its front.
const FRONT: usize = 4 * 1024;

/// How soon the flusher looks again at an outbox whose lane a sender had.
const LANE_BUSY: Duration = Duration::from_micros(50);

impl<'a> Locked<'a> {
    /// Moves the lane's frames to the end of the buffer: where the lane
    /// kept room for the bytes that wait there, those go to the lane's
    /// front and the two buffers swap, so that a stream of values is not
    /// copied once more on its way out.
    fn new(mut out: MutexGuard<'a, Out>, mut lane: Taken<'a, Lane>) -> Self {
        let front = std::mem::take(&mut lane.front);
        if lane.buf.len() > front {
            if front == out.pending().len() {
                lane.buf[..front].copy_from_slice(out.pending());
                std::mem::swap(&mut out.buf, &mut lane.buf);
                out.head = 0;
            } else {
                out.buf.extend_from_slice(&lane.buf[front..]);
            }
        }
        lane.buf.clear();
        if lane.buf.capacity() > KEEP {
            lane.buf = Vec::new();
        }
        Self { lane, out }
    }
}

impl Deref for Locked<'_> {
    type Target = Out;

    fn deref(&self) -> &Out {
        &self.out
    }
}

impl DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut Out {
        &mut self.out
    }
}

impl Drop for Locked<'_> {
    /// Opens the lane for the values that follow, with room at its front
    /// for the bytes waiting now when they are few, or closes it.
    fn drop(&mut self) {
        let room = self.out.lane_room();
        let lane = &mut *self.lane;
        lane.open = room.is_some();
        lane.room = room.unwrap_or(0);
        let waiting = self.out.pending().len();
        if lane.open && waiting <= FRONT {
            lane.front = waiting;
            lane.buf.resize(waiting, 0);
        }
    }
}

/// Appends a frame of `tag` holding `value` serialized to `buf`, if it has
/// no long byte run: false, `buf` as it was, if it has one. On failure, and
/// if encoding panics, `buf` is left as it was.
#[inline]
fn encode_frame<T: Serialize + ?Sized>(buf: &mut Vec<u8>, tag: u8, value: &T) -> Result<bool> {
    /// Cuts `buf` back to `start` unless disarmed.
    struct Cut<'a> {
        buf: &'a mut Vec<u8>,
        start: usize,
        armed: bool,
    }
    impl Drop for Cut<'_> {
        fn drop(&mut self) {
            if self.armed {
                self.buf.truncate(self.start);
            }
        }
    }
    let start = buf.len();
    buf.extend_from_slice(&[0, 0, 0, 0, tag]);
    let mut guard = Cut {
        buf,
        start,
        armed: true,
    };
    if !encoding(|| codec::encode_plain(value, guard.buf))? {
        return Ok(false);
    }
    let header = codec::header(guard.buf.len() - start - HEADER)?;
    guard.buf[start..start + HEADER].copy_from_slice(&header);
    guard.armed = false;
    Ok(true)
}

/// Undoes a frame begun in the buffer unless it is disarmed: the buffer
/// never keeps half a frame, even if serializing panics.
struct Rollback<'a> {
    out: &'a mut Out,
    start: usize,
    armed: bool,
}

impl Drop for Rollback<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.out.buf.truncate(self.start);
        }
    }
}

/// Runs `f`, which serializes a value of the user's into an outbox it has
/// locked, with [`ENCODING`] set.
pub(crate) fn encoding<R>(f: impl FnOnce() -> R) -> R {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            ENCODING.set(false);
        }
    }
    ENCODING.set(true);
    let _reset = Reset;
    f()
}

/// Whether frames of `tag` wait in the buffer: values do, any other
/// frame writes them out.
pub(crate) fn coalesces(tag: u8) -> bool {
    matches!(tag, tag::DATA | tag::ERROR)
}

/// The process's flusher: the outboxes with bytes waiting, each with when
/// to look at it.
struct Flusher {
    pid: u32,
    due: Mutex<Vec<(Instant, Weak<Outbox>)>>,
    wake: Condvar,
}

impl Flusher {
    /// This process's flusher, started the first time; `None` if its
    /// thread cannot start, or in a forked child, whose copy of the
    /// parent's flusher has no thread.
    fn get() -> Option<&'static Self> {
        static FLUSHER: OnceLock<Option<&'static Flusher>> = OnceLock::new();
        let flusher = (*FLUSHER.get_or_init(|| {
            let flusher: &'static Self = Box::leak(Box::new(Self {
                pid: std::process::id(),
                due: Mutex::new(Vec::new()),
                wake: Condvar::new(),
            }));
            std::thread::Builder::new()
                .name("pproc-flush".into())
                .spawn(|| flusher.run())
                .ok()
                .map(|_| flusher)
        }))?;
        (flusher.pid == std::process::id()).then_some(flusher)
    }

    /// Looks at `outbox` at `at`.
    fn queue(&self, outbox: &Arc<Outbox>, at: Instant) {
        let mut due = lock(&self.due);
        let first = due.iter().all(|(when, _)| *when > at);
        due.push((at, Arc::downgrade(outbox)));
        if first {
            self.wake.notify_one();
        }
    }

    fn run(&self) {
        let mut due = lock(&self.due);
        loop {
            let now = Instant::now();
            let mut ready = Vec::new();
            let mut i = 0;
            while i < due.len() {
                if due[i].0 <= now {
                    ready.push(due.swap_remove(i).1);
                } else {
                    i += 1;
                }
            }
            if !ready.is_empty() {
                drop(due);
                let again: Vec<_> = ready
                    .into_iter()
                    .filter_map(|weak| {
                        let outbox = weak.upgrade()?;
                        outbox.flush_idle(now).map(|at| (at, weak))
                    })
                    .collect();
                due = lock(&self.due);
                due.extend(again);
                continue;
            }
            due = match due.iter().map(|(when, _)| *when).min() {
                None => wait(&self.wake, due),
                Some(at) => wait_timeout(&self.wake, due, at - now),
            };
        }
    }
}

/// The error for a write that failed with `errno`.
pub(crate) fn written_error(errno: Errno) -> Error {
    match errno {
        Errno::EPIPE | Errno::ECONNRESET => Error::Disconnected,
        err => Error::from_errno(err),
    }
}

/// Writes `parts` in order, whole, to the non-blocking socket `fd`, calling
/// `wait` whenever it has no room.
pub(crate) fn send_all<const N: usize>(
    fd: BorrowedFd<'_>,
    parts: [&[u8]; N],
    wait: impl FnMut(BorrowedFd<'_>) -> Result<()>,
) -> Result<()> {
    send_all_passing(fd, parts, None, wait)
}

/// As [`send_all`], passing the descriptor `pass` (`SCM_RIGHTS`) with the
/// first byte written.
pub(crate) fn send_all_passing<const N: usize>(
    fd: BorrowedFd<'_>,
    parts: [&[u8]; N],
    mut pass: Option<BorrowedFd<'_>>,
    mut wait: impl FnMut(BorrowedFd<'_>) -> Result<()>,
) -> Result<()> {
    let mut slices = parts.map(std::io::IoSlice::new);
    let mut left = &mut slices[..];
    // Empty parts at the front need no write.
    std::io::IoSlice::advance_slices(&mut left, 0);
    while !left.is_empty() {
        let sent = if let Some(passed) = pass {
            let fds = [passed.as_raw_fd()];
            let rights = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
            sendmsg::<()>(fd.as_raw_fd(), left, &rights, MsgFlags::MSG_NOSIGNAL, None)
        } else if let [one] = left {
            send(fd.as_raw_fd(), one, MsgFlags::MSG_NOSIGNAL)
        } else {
            sendmsg::<()>(fd.as_raw_fd(), left, &[], MsgFlags::MSG_NOSIGNAL, None)
        };
        match sent {
            Ok(n) => {
                pass = None;
                std::io::IoSlice::advance_slices(&mut left, n);
            }
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => wait(fd)?,
            Err(err) => return Err(written_error(err)),
        }
    }
    Ok(())
}

/// Waits until `fd` has room, reading nothing.
pub(crate) fn wait_for_room(fd: BorrowedFd<'_>) -> Result<()> {
    let mut fds = [PollFd::new(fd, PollFlags::POLLOUT)];
    poll_until(&mut fds, Deadline::Never).map(drop)
}
