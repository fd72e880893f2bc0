//! Framing over a non-blocking Unix stream socket (the frames themselves
//! are in [`frame`](super::frame)).
//!
//! Writes never deadlock against a peer that is
//! writing too: while a write waits for room, whatever the peer sends is read
//! into the receive buffer, so both ends keep draining each other.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags};
use serde::Serialize;

use super::codec::{self, HEADER};
use super::frame::tag;
use super::log;
use super::outbox::{
    Frame, Out, Outbox, coalesces, encoding, send_all, send_all_passing, wait_for_room,
};
use super::shm::{self, Lent, Mapping, Memfd, Releases, Sink, Slab};
use super::wait::{Deadline, poll_until};
use crate::error::{Error, Result, with_causes};

/// The default limit on a frame's body, in bytes: larger frames are refused
/// before anything is allocated for them.
pub const DEFAULT_MAX_FRAME: usize = 1 << 30;

/// A connection that several threads of a child share: its function, the
/// channel it was handed, and the panic hook.
pub(crate) type SharedConn = Arc<Mutex<Conn>>;

/// What [`Conn::wait`] saw.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Wake {
    /// The socket is readable (data or end of stream).
    Socket,
    /// The watched process exited.
    Exited,
    /// The deadline passed.
    Timeout,
}

/// The largest receive buffer that [`Conn::lend_ahead`] swaps out whole.
const LEND_CAP: usize = 1 << 20;

/// The most bytes of frames [`Conn::lend_ahead`] copies from a larger one.
const AHEAD: usize = 4 * 1024;

/// One end of a framed connection.
#[derive(Debug)]
pub(crate) struct Conn {
    /// Shared with the handle, which lends it without taking its lock.
    fd: Arc<OwnedFd>,
    /// Received bytes; `rbuf[rpos..]` is not parsed yet.
    rbuf: Vec<u8>,
    rpos: usize,
    max_frame: usize,
    eof: bool,
    /// Set when the stream lost its framing (an oversized length): nothing
    /// more can be read from it.
    broken: Option<String>,
    /// An error met while filling a batch, returned by the next receive.
    deferred: Option<Error>,
    /// What was sent and not written yet, shared with the ends that send
    /// without locking the connection, and with the flusher.
    out: Arc<Outbox>,
    /// Whether large frames go through shared memory: the socket is a
    /// Unix socket, which carries descriptors.
    shares: bool,
    /// Whether `fd` is a socket at all: a pipe is read with `read(2)` (an
    /// agent reads its link from its standard input).
    socket: bool,
    /// Descriptors received for `SHARED` frames not read yet.
    fds: VecDeque<OwnedFd>,
    /// Which end of a parent and child this is, for slabs.
    role: Role,
    /// Where the long byte run of a large `DATA` frame is, as the type
    /// that reads them sees it: the run is then read in place.
    locate: Option<codec::Locate>,
    /// The runs of frames in the buffer, read in place, in order: the
    /// buffer holds those frames without them. Only the last may still be
    /// arriving, and then nothing after it is in the buffer.
    runs: VecDeque<InPlace>,
    /// Where the frame that `locate` was last asked about starts, and how
    /// much of it had arrived: it is asked again once twice as much has,
    /// if that was too little to tell.
    asked: Option<(usize, usize)>,
    /// Where a frame starts that is not known to be whole, at or after
    /// `rpos`: the frames before it are.
    scanned: usize,
}

/// A long byte run of a frame, read from the socket into a vector of its
/// own (see [`codec::Run`]).
#[derive(Debug)]
struct InPlace {
    /// Where the frame starts in the buffer.
    frame: usize,
    /// Where it belongs in the frame's body.
    at: usize,
    /// How long it is.
    len: usize,
    /// What has arrived of it.
    bytes: Vec<u8>,
}

impl InPlace {
    /// Bytes of the frame that are in the run rather than the buffer,
    /// once it has all arrived.
    fn whole(run: Option<&Self>) -> Option<usize> {
        match run {
            None => Some(0),
            Some(run) => (run.bytes.len() == run.len).then_some(run.len),
        }
    }
}

/// How a connection's ends share slabs (see [`shm`]).
#[derive(Debug, Default)]
enum Role {
    /// Not at all: large frames go through sealed memfds both ways.
    #[default]
    Peers,
    /// A parent's end: it lends its slabs to the child.
    Lender(Lent),
    /// A child's end: it maps what its parent lends, and tells it when
    /// it has let go.
    Borrower(Arc<Releases>),
}

/// What [`Conn::next`] saw.
#[derive(Debug)]
pub(crate) enum Next<T> {
    /// A frame, as the caller read it.
    Frame(T),
    /// The peer closed its end; everything it sent was read.
    Closed,
    /// The watched process exited; everything it sent was read.
    Exited,
    /// The deadline passed.
    Timeout,
}

impl Conn {
    /// Wraps a connected stream socket, switching it to non-blocking mode.
    pub(crate) fn new(fd: OwnedFd) -> Result<Self> {
        let flags =
            nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFL).map_err(Error::from_errno)?;
        let flags = nix::fcntl::OFlag::from_bits_retain(flags) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFL(flags)).map_err(Error::from_errno)?;
        let (socket, shares) = {
            use nix::sys::socket::{AddressFamily, SockaddrLike, SockaddrStorage, getsockname};
            match getsockname::<SockaddrStorage>(fd.as_raw_fd()) {
                Ok(addr) => (true, addr.family() == Some(AddressFamily::Unix)),
                Err(_) => (false, false),
            }
        };
        let fd = Arc::new(fd);
        Ok(Self {
            out: Outbox::new(Arc::clone(&fd)),
            shares,
            socket,
            fds: VecDeque::new(),
            role: Role::Peers,
            fd,
            rbuf: Vec::new(),
            rpos: 0,
            max_frame: DEFAULT_MAX_FRAME,
            eof: false,
            broken: None,
            deferred: None,
            locate: None,
            runs: VecDeque::new(),
            asked: None,
            scanned: 0,
        })
    }

    /// Reads the long byte run of a large `DATA` frame in place, where
    /// `locate` finds one (see [`codec::locator`]): the receives that
    /// decode them find it there. `None` reads every frame whole.
    pub(crate) fn read_runs_as(&mut self, locate: Option<codec::Locate>) {
        self.locate = locate;
    }

    /// Large frames go through the socket, both ways: for a socket whose
    /// peer relays bytes elsewhere (another host), where descriptors
    /// cannot follow.
    pub(crate) fn without_shared_memory(&mut self) {
        self.shares = false;
        self.role = Role::Peers;
    }

    /// A parent's end: large frames it sends go into its slabs, lent to
    /// the child (see [`shm`]).
    pub(crate) fn lend_slabs(&mut self) {
        if self.shares {
            self.role = Role::Lender(Lent::default());
        }
    }

    /// A child's end: it takes the slabs its parent lends.
    pub(crate) fn borrow_slabs(&mut self) {
        if self.shares {
            self.role = Role::Borrower(Arc::default());
        }
    }

    /// As a parent's end, lends `slab` as if a frame in it had been sent:
    /// for the fuzz target, which reads what a child says of slabs.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn lend_for_fuzzing(&mut self, slab: Arc<Slab>) {
        self.lend_slabs();
        if let Role::Lender(lent) = &mut self.role {
            lent.lend(slab);
        }
    }

    pub(crate) fn set_max_frame(&mut self, bytes: usize) {
        self.max_frame = bytes;
    }

    pub(crate) fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The socket, for an owner that lends it without locking the
    /// connection.
    pub(crate) fn shared_fd(&self) -> Arc<OwnedFd> {
        Arc::clone(&self.fd)
    }

    /// Whether the peer closed its end and every byte it sent was read.
    pub(crate) fn is_eof(&self) -> bool {
        self.eof && self.rpos == self.rbuf.len()
    }

    /// What was sent and not written yet, for an end that sends without
    /// locking the connection.
    pub(crate) fn outbox(&self) -> Arc<Outbox> {
        Arc::clone(&self.out)
    }

    /// Writes a worker's answers to `log` from now on (see
    /// [`log`](super::log)).
    pub(crate) fn set_log(&mut self, log: log::Writer) -> Result<()> {
        self.out.lock()?.set_log(log);
        Ok(())
    }

    /// Starts the log again from its start, as the parent's `LOG` frame
    /// with `body` says.
    pub(crate) fn restart_log(&mut self, body: &[u8]) -> Result<()> {
        self.out.lock()?.restart_log(body)
    }

    /// Sends frames that are already whole (headers included), in one
    /// write, after what waits.
    pub(crate) fn send_framed(&mut self, frames: &[u8]) -> Result<()> {
        let outbox = Arc::clone(&self.out);
        let mut out = outbox.lock()?;
        out.check()?;
        let written = self.write_all([out.pending(), frames]);
        outbox.done(&mut out, written)
    }

    /// Whether a whole frame has been received and not taken yet.
    fn has_frame(&self) -> bool {
        let have = &self.rbuf[self.rpos..];
        matches!(
            (codec::announced(have, 1, self.max_frame), InPlace::whole(self.head_run())),
            (Ok(Some(len)), Some(run)) if have.len() + run >= HEADER + len
        )
    }

    /// Sends one frame whose payload is `value` serialized. A value
    /// (`DATA`, `ERROR`) waits in the outbox with those sent before it
    /// (see [`outbox`](super::outbox)); any other frame is written at once,
    /// with them. Long byte runs (a [`Bytes`](crate::Bytes) payload) are
    /// written to the socket from the value itself.
    pub(crate) fn send_value<T: Serialize + ?Sized>(&mut self, tag: u8, value: &T) -> Result<()> {
        let outbox = Arc::clone(&self.out);
        let mut out = outbox.lock()?;
        out.check()?;
        self.owe_releases(&mut out);
        let mut frame = out.encode(tag, value)?;
        if out.holes().is_empty() {
            // A worker's call is over when no call waits behind it.
            let over = matches!(tag, tag::RESULT | tag::PANIC | tag::FAIL) && !self.has_frame();
            match outbox.to_log(&mut out, tag, frame.start, over) {
                Some(true) => {
                    let written = self.write_all([out.pending()]);
                    return outbox.done(&mut out, written);
                }
                Some(false) => return Ok(()),
                None => {}
            }
        }
        frame.start += out.announce_at(frame.start);
        if self.shares
            && out
                .holes()
                .iter()
                .any(|hole| hole.bytes && hole.len >= shm::SHARED_FROM)
            && let Some(written) = self.write_shared(&outbox, &mut out, tag, value, &frame)
        {
            return written;
        }
        if !out.holes().is_empty() {
            return self.write_gathered(&outbox, &mut out, value, &frame);
        }
        if coalesces(tag) && !out.after().is_zero() && outbox.hold(&mut out, frame.start) {
            return Ok(());
        }
        let written = self.write_all([out.pending()]);
        outbox.done(&mut out, written)
    }

    /// Sends one frame whose payload is already serialized, as
    /// [`send_value`](Self::send_value) does: a long one is written from
    /// `payload` as it is.
    pub(crate) fn send_bytes(&mut self, tag: u8, payload: &[u8]) -> Result<()> {
        let outbox = Arc::clone(&self.out);
        let mut out = outbox.lock()?;
        out.check()?;
        self.owe_releases(&mut out);
        if self.shares
            && payload.len() >= shm::SHARED_FROM
            && let Some(mut sink) = self.sink(payload.len())
        {
            sink.write(payload)?;
            out.announce();
            return self.write_sink(&outbox, &mut out, tag, sink);
        }
        if payload.len() >= codec::LONG_RUN {
            let [a, b, c, d] = codec::header(payload.len() + 1)?;
            out.announce();
            let written = self.write_all([out.pending(), &[a, b, c, d, tag], payload]);
            return outbox.done(&mut out, written);
        }
        let mut start = out.append(tag, payload)?;
        let over = matches!(tag, tag::RESULT | tag::PANIC | tag::FAIL) && !self.has_frame();
        match outbox.to_log(&mut out, tag, start, over) {
            Some(true) => {
                let written = self.write_all([out.pending()]);
                return outbox.done(&mut out, written);
            }
            Some(false) => return Ok(()),
            None => start += out.announce_at(start),
        }
        if coalesces(tag) && !out.after().is_zero() && outbox.hold(&mut out, start) {
            return Ok(());
        }
        let written = self.write_all([out.pending()]);
        outbox.done(&mut out, written)
    }

    /// Writes out every value that waits in the outbox.
    ///
    /// # Errors
    ///
    /// [`Error::Disconnected`] if the peer is gone; once a write has
    /// failed, every later send and flush fails the same way.
    pub(crate) fn flush(&mut self) -> Result<()> {
        let outbox = Arc::clone(&self.out);
        let mut out = outbox.lock()?;
        out.announce();
        self.owe_releases(&mut out);
        if out.pending().is_empty() {
            return out.check();
        }
        let written = self.write_all([out.pending()]);
        outbox.done(&mut out, written)
    }

    /// Writes out what waits before a wait for the peer, which may be
    /// waiting for it. A failure is kept for the next send or flush: the
    /// receive goes on with what the peer sent.
    fn flush_before_waiting(&mut self) {
        let owed = matches!(&self.role, Role::Borrower(releases) if releases.any());
        if self.out.is_dirty() || owed {
            let _ = self.flush();
        }
    }

    /// Puts a `RELEASE` frame in `out` for each slab the child let go of
    /// and has not told its parent of yet.
    fn owe_releases(&self, out: &mut Out) {
        if let Role::Borrower(releases) = &self.role
            && releases.any()
        {
            for slab in releases.take() {
                // Four bytes of body: far within any limit.
                let _ = out.append(tag::RELEASE, &slab.to_le_bytes());
            }
        }
    }

    /// Where a large frame of `len` bytes is written: a slab, where this
    /// end lends them and one is free, or else a memfd of its own. `None`
    /// where the kernel gives neither.
    fn sink(&self, len: usize) -> Option<Sink> {
        if let Role::Lender(_) = self.role
            && let Some(slab) = Slab::take(len)
        {
            return Some(Sink::Slab(slab));
        }
        Memfd::create().map(Sink::Memfd)
    }

    /// Writes out the waiting bytes and the frame at `frame.start`, which
    /// [`Out::encode`] encoded with holes: the pieces of the buffer and,
    /// between them, the runs that a second serialization of `value`
    /// hands over. The frame's last byte waits until the second
    /// serialization has matched the first, so a value that serializes
    /// differently leaves a frame cut short (the socket is shut, and the
    /// peer reads an error), never a wrong one.
    fn write_gathered<T: Serialize + ?Sized>(
        &mut self,
        outbox: &Outbox,
        out: &mut Out,
        value: &T,
        frame: &Frame,
    ) -> Result<()> {
        let whole = out.from(0);
        let holes = out.holes();
        // `whole` up to `done` is written; `skipped` bytes of runs are not
        // in it.
        let mut done = out.head();
        let mut skipped = 0;
        let mut held = None;
        let replayed = encoding(|| {
            codec::replay(value, holes, frame.len, |i, run| {
                let upto = frame.start + HEADER + 1 + holes[i].at - skipped;
                skipped += run.len();
                let piece = &whole[done..upto];
                done = upto;
                let run = if i + 1 == holes.len() && done == whole.len() {
                    let (last, run) = run.split_last().unwrap_or((&0, run));
                    held = Some(*last);
                    run
                } else {
                    run
                };
                self.write_all([piece, run])
            })
        });
        let written = match replayed {
            Ok(()) => self.write_all([&whole[done..], held.as_slice()]),
            Err(err) if done == out.head() => {
                // Nothing of the frame was written: the channel goes on.
                out.drop_from(frame.start);
                return Err(err);
            }
            Err(err) => {
                // A frame is cut short: the peer must see it end there.
                if !matches!(err, Error::Disconnected) {
                    let _ = nix::sys::socket::shutdown(
                        self.fd.as_raw_fd(),
                        nix::sys::socket::Shutdown::Write,
                    );
                }
                Err(err)
            }
        };
        outbox.done(out, written)
    }

    /// Writes out the waiting bytes and the frame at `frame.start`, which
    /// holds a run of [`shm::SHARED_FROM`] bytes or more, in shared
    /// memory: its payload goes into a slab or a sealed memfd (see
    /// [`sink`](Self::sink)), or, where the value is a buffer that arrived
    /// in shared memory and is sent on unchanged, goes as that memory.
    /// `None` where the kernel gives no memfd: nothing was done, and the
    /// frame goes through the socket.
    fn write_shared<T: Serialize + ?Sized>(
        &mut self,
        outbox: &Outbox,
        out: &mut Out,
        tag: u8,
        value: &T,
        frame: &Frame,
    ) -> Option<Result<()>> {
        let body = out.from(frame.start + HEADER + 1);
        let holes = out.holes();
        // A value that is one buffer, at its end, that lies in a mapping
        // that holds this very payload, and that can be passed on as it is.
        let tail = match holes {
            [hole] if hole.at + hole.len == frame.len => Some(hole.at),
            _ => None,
        };
        let mut passed = None;
        // Made at the first write, so that a buffer passed on takes none.
        let mut sink = None;
        let mut no_sink = false;
        let mut write = |sink: &mut Option<Sink>, bytes: &[u8]| {
            if sink.is_none() {
                *sink = self.sink(frame.len);
                no_sink = sink.is_none();
            }
            match sink {
                Some(sink) => sink.write(bytes),
                None => Err(Error::codec("no memfd to write into")),
            }
        };
        // `body` up to `done` is in the sink; `skipped` bytes of runs are
        // not in `body`.
        let (mut done, mut skipped) = (0, 0);
        let replayed = encoding(|| {
            codec::replay(value, holes, frame.len, |i, run| {
                if let Some(at) = tail {
                    passed = Mapping::holding(run).filter(|mapping| {
                        mapping.bytes().len() == frame.len
                            && mapping.offset_of(run) == Some(at)
                            && mapping.bytes()[..at] == *body
                            && self.passes(mapping)
                    });
                    if passed.is_some() {
                        return Ok(());
                    }
                }
                let upto = holes[i].at - skipped;
                skipped += run.len();
                write(&mut sink, &body[done..upto])?;
                done = upto;
                write(&mut sink, run)
            })
        });
        let written = replayed.and_then(|()| match passed {
            Some(_) => Ok(()),
            None => write(&mut sink, &body[done..]),
        });
        if no_sink {
            // The kernel gave no memfd: the frame is whole in the buffer.
            return None;
        }
        out.drop_from(frame.start);
        if let Err(err) = written {
            // Nothing of the frame was written: the channel goes on.
            return Some(Err(err));
        }
        Some(match (passed, sink) {
            (Some(mapping), _) => self.pass_on(outbox, out, tag, &mapping),
            (None, Some(sink)) => self.write_sink(outbox, out, tag, sink),
            (None, None) => unreachable!("the rest of the body was written into a sink"),
        })
    }

    /// Whether `mapping` can go on as it is, over this connection: a
    /// sealed memfd that is kept, a slab this end's parent lent, or one of
    /// our own slabs, to lend.
    fn passes(&self, mapping: &Mapping) -> bool {
        if mapping.memfd().is_some() {
            return true;
        }
        match (&self.role, mapping.lent_by()) {
            (Role::Borrower(ours), Some((_, theirs))) => Arc::ptr_eq(ours, theirs),
            (Role::Lender(_), None) => mapping.own_slab().is_some(),
            _ => false,
        }
    }

    /// Writes out the waiting bytes and a frame of `tag` whose payload is
    /// all of `mapping`, unchanged, as that memory (see
    /// [`passes`](Self::passes)).
    fn pass_on(
        &mut self,
        outbox: &Outbox,
        out: &mut Out,
        tag: u8,
        mapping: &Mapping,
    ) -> Result<()> {
        let len = mapping.bytes().len();
        match (mapping.memfd(), mapping.lent_by()) {
            (Some(memfd), _) => self.write_passing(
                outbox,
                out,
                tag::SHARED,
                &stand_in(tag, None, len),
                Some(memfd),
            ),
            (None, Some((slab, _))) => self.write_passing(
                outbox,
                out,
                tag::SLAB_BACK,
                &stand_in(tag, Some(slab), len),
                None,
            ),
            (None, None) => match (mapping.own_slab(), &mut self.role) {
                (Some(slab), Role::Lender(lent)) => {
                    lent.lend(Arc::clone(slab));
                    let body = stand_in(tag, Some(slab.id()), len);
                    self.write_passing(outbox, out, tag::SLAB, &body, Some(slab.memfd()))
                }
                // `passes` allows nothing else.
                _ => outbox.done(
                    out,
                    Err(Error::codec("a shared buffer that cannot be passed on")),
                ),
            },
        }
    }

    /// Writes out the waiting bytes and a frame of `tag` whose payload
    /// `sink` holds: a memfd, sealed now, or a slab, lent now.
    fn write_sink(&mut self, outbox: &Outbox, out: &mut Out, tag: u8, sink: Sink) -> Result<()> {
        match sink {
            Sink::Memfd(memfd) => {
                let (memfd, len) = match memfd.seal() {
                    Ok(sealed) => sealed,
                    Err(err) => return outbox.done(out, Err(err)),
                };
                let body = stand_in(tag, None, len);
                self.write_passing(outbox, out, tag::SHARED, &body, Some(memfd.as_fd()))
            }
            Sink::Slab(slab) => {
                let slab = slab.finish();
                if let Role::Lender(lent) = &mut self.role {
                    lent.lend(Arc::clone(&slab));
                }
                let body = stand_in(tag, Some(slab.id()), slab.len());
                self.write_passing(outbox, out, tag::SLAB, &body, Some(slab.memfd()))
            }
        }
    }

    /// Writes out the waiting bytes and a frame of `frame_tag` and `body`
    /// that stands for a frame in shared memory, passing `memfd` with it.
    fn write_passing(
        &mut self,
        outbox: &Outbox,
        out: &mut Out,
        frame_tag: u8,
        body: &[u8],
        memfd: Option<BorrowedFd<'_>>,
    ) -> Result<()> {
        if let Err(err) = out.append(frame_tag, body) {
            return outbox.done(out, Err(err));
        }
        let fd = Arc::clone(&self.fd);
        let written = send_all_passing(fd.as_fd(), [out.pending()], memfd, |fd| {
            self.wait_for_room(fd)
        });
        outbox.done(out, written)
    }

    /// Writes `parts` in order, whole, in as few writes as the socket
    /// allows. While the socket has no room, whatever the peer sends is
    /// read into the receive buffer.
    fn write_all<const N: usize>(&mut self, parts: [&[u8]; N]) -> Result<()> {
        let fd = Arc::clone(&self.fd);
        send_all(fd.as_fd(), parts, |fd| self.wait_for_room(fd))
    }

    /// Waits until the socket has room, reading whatever the peer sends
    /// meanwhile into the receive buffer: two writers would wait on each
    /// other forever otherwise.
    fn wait_for_room(&mut self, fd: BorrowedFd<'_>) -> Result<()> {
        let mut fds = [PollFd::new(fd, PollFlags::POLLOUT | PollFlags::POLLIN)];
        poll_until(&mut fds, Deadline::Never)?;
        let revents = fds[0].revents().unwrap_or(PollFlags::empty());
        if revents.intersects(PollFlags::POLLIN) && !self.eof {
            self.fill()?;
        }
        Ok(())
    }

    /// Reads whatever the socket holds now into the receive buffer, without
    /// blocking. Returns the number of bytes read.
    pub(crate) fn fill(&mut self) -> Result<usize> {
        let mut total = 0;
        loop {
            if self.rpos > 0 && self.rpos == self.rbuf.len() {
                self.shift(self.rpos);
                self.rbuf.clear();
            } else if self.rpos > 0 && self.rpos >= self.rbuf.len() / 2 {
                let by = self.rpos;
                self.shift(by);
                self.rbuf.drain(..by);
            }
            if let Some(want) = self.run_room() {
                let (got, passed) = self.recv_spare(want, true);
                match self.received(got, want, passed, true, &mut total) {
                    Some(done) => return done,
                    None => continue,
                }
            }
            // Read a whole pending frame at once where its length is known,
            // but reserve no more ahead than has arrived already: a header
            // that claims a gigabyte costs what its peer really sends. Room
            // the buffer has already is used as it is.
            let ahead = (self.rbuf.len() - self.rpos).clamp(64 * 1024, 4 << 20);
            let missing = self.missing();
            let room = self.rbuf.capacity() - self.rbuf.len();
            let want = missing.clamp(64 * 1024, ahead).max(missing.min(room));
            let had = self.rbuf.capacity();
            self.rbuf.reserve(want);
            if self.rbuf.capacity() != had {
                codec::advise_huge(self.rbuf.spare_capacity_mut());
            }
            let (got, passed) = self.recv_spare(want, false);
            if let Some(done) = self.received(got, want, passed, false, &mut total) {
                return done;
            }
            if self.locate.is_some() {
                self.locate_run();
            }
        }
    }

    /// What a receive of up to `want` bytes (into the run, if `run`) got:
    /// the end of [`fill`](Self::fill), or `None` to read on.
    fn received(
        &mut self,
        got: isize,
        want: usize,
        passed: bool,
        run: bool,
        total: &mut usize,
    ) -> Option<Result<usize>> {
        match usize::try_from(got) {
            Ok(0) => {
                self.eof = true;
                Some(Ok(*total))
            }
            Ok(n) => {
                let buf = match self.runs.back_mut() {
                    Some(InPlace { bytes, .. }) if run => bytes,
                    _ => &mut self.rbuf,
                };
                // SAFETY: `recv` initialized the first `n` bytes of the
                // spare capacity.
                unsafe { buf.set_len(buf.len() + n) };
                *total += n;
                // A read stops short where descriptors came: more may wait
                // behind them.
                (n < want && !passed).then_some(Ok(*total))
            }
            Err(_) => match Errno::last() {
                Errno::EINTR => None,
                Errno::EAGAIN => Some(Ok(*total)),
                Errno::ECONNRESET => {
                    self.eof = true;
                    Some(Ok(*total))
                }
                err => Some(Err(Error::from_errno(err))),
            },
        }
    }

    /// Notes that the first `by` bytes of the buffer are about to go: what
    /// points into it moves back.
    fn shift(&mut self, by: usize) {
        self.rpos -= by;
        self.scanned = self.scanned.saturating_sub(by);
        let kept = by..self.rbuf.len();
        self.asked = self
            .asked
            .filter(|(at, _)| kept.contains(at))
            .map(|(at, had)| (at - by, had));
        for run in &mut self.runs {
            run.frame -= by;
        }
    }

    /// The run read in place, if it is the frame at the head's.
    fn head_run(&self) -> Option<&InPlace> {
        self.runs.front().filter(|run| run.frame == self.rpos)
    }

    /// Bytes the run being read in place is still missing, if any.
    fn run_room(&self) -> Option<usize> {
        let run = self.runs.back()?;
        Some(run.len - run.bytes.len()).filter(|&missing| missing > 0)
    }

    /// Asks `locate` where the long byte run of a large `DATA` frame that
    /// has not all arrived is, once per frame; the rest of the run is then
    /// read in place: what arrived of it moves from the buffer into its
    /// own vector.
    fn locate_run(&mut self) {
        let Some(locate) = self.locate else { return };
        if self.run_room().is_some() {
            return;
        }
        // The last frame in the buffer is the one still arriving.
        let mut frame = self.scanned.max(self.rpos);
        let len = loop {
            let Ok(Some(len)) = codec::announced(&self.rbuf[frame..], 1, self.max_frame) else {
                return;
            };
            let kept = self.runs.iter().find(|run| run.frame == frame);
            let here = HEADER + len - kept.map_or(0, |run| run.len);
            if self.rbuf.len() - frame >= here {
                frame += here;
            } else if kept.is_some() {
                // Its run is in place already; the rest is arriving.
                return;
            } else {
                break len;
            }
        };
        self.scanned = frame;
        let have = &self.rbuf[frame..];
        if len <= codec::IN_PLACE || have.len() <= HEADER || have[HEADER] != tag::DATA {
            return;
        }
        if matches!(self.asked, Some((at, had)) if at == frame && have.len() / 2 < had) {
            return;
        }
        let head = &have[HEADER + 1..];
        let body = len - 1;
        let (at, run) = match locate(head, body) {
            codec::Located::At { at, len } => {
                self.asked = Some((frame, usize::MAX));
                (at, len)
            }
            codec::Located::Short => {
                self.asked = Some((frame, have.len()));
                return;
            }
            codec::Located::Not => {
                self.asked = Some((frame, usize::MAX));
                return;
            }
        };
        // `locate` checked these; a lie here would misplace bytes.
        if at > head.len() || at + run <= head.len() || at + run > body || run < codec::IN_PLACE {
            return;
        }
        let start = frame + HEADER + 1 + at;
        // Reserved whole: growing it would copy what arrived (memory
        // advised huge is not remapped). It is address space: memory backs
        // it as the bytes arrive, so a length that lies costs what the
        // peer really sends.
        let mut bytes = Vec::with_capacity(run);
        codec::advise_huge(bytes.spare_capacity_mut());
        bytes.extend_from_slice(&self.rbuf[start..]);
        self.rbuf.truncate(start);
        self.runs.push_back(InPlace {
            frame,
            at,
            len: run,
            bytes,
        });
    }

    /// Receives up to `want` bytes into the receive buffer's spare
    /// capacity, and any descriptors that come with them; returns what
    /// `recv` does, and whether descriptors came.
    fn recv_spare(&mut self, want: usize, run: bool) -> (isize, bool) {
        let buf = match self.runs.back_mut() {
            Some(InPlace { bytes, .. }) if run => bytes,
            _ => &mut self.rbuf,
        };
        let spare = &mut buf.spare_capacity_mut()[..want];
        if !self.socket {
            // SAFETY: as below; the descriptor is non-blocking (`new`).
            let got = unsafe { libc::read(self.fd.as_raw_fd(), spare.as_mut_ptr().cast(), want) };
            return (got, false);
        }
        if !self.shares {
            // SAFETY: the kernel writes at most `want` bytes into `spare`,
            // memory the vector owns, and reads none of it.
            let got = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    spare.as_mut_ptr().cast(),
                    want,
                    libc::MSG_DONTWAIT,
                )
            };
            return (got, false);
        }
        let mut iov = libc::iovec {
            iov_base: spare.as_mut_ptr().cast(),
            iov_len: want,
        };
        // Room for the control messages of more descriptors than may
        // queue: aligned for `cmsghdr`.
        let mut control = [0_u64; 32];
        // SAFETY: a zeroed `msghdr` is valid (no name, no control).
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &raw mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control);
        // SAFETY: the kernel writes at most `want` bytes into `spare` and
        // at most `msg_controllen` bytes into `control`, both ours.
        let got = unsafe {
            libc::recvmsg(
                self.fd.as_raw_fd(),
                &raw mut msg,
                libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC,
            )
        };
        if got < 0 || msg.msg_controllen == 0 {
            return (got, false);
        }
        let mut passed = Vec::new();
        // SAFETY: `msg` is what `recvmsg` filled in, its control buffer
        // alive; each header the macros give lies inside it.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                    // Read unaligned below: the data need not be aligned.
                    #[expect(clippy::cast_ptr_alignment, reason = "read unaligned")]
                    let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                    let bytes = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                    for i in 0..bytes / std::mem::size_of::<RawFd>() {
                        // The kernel installed each descriptor for us.
                        passed.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                    }
                }
                cmsg = libc::CMSG_NXTHDR(&raw const msg, cmsg);
            }
        }
        if msg.msg_flags & libc::MSG_CTRUNC != 0 || self.fds.len() + passed.len() > shm::MAX_QUEUED
        {
            self.broken.get_or_insert_with(|| {
                format!(
                    "the peer sent more than {} descriptors ahead of their frames",
                    shm::MAX_QUEUED
                )
            });
        } else {
            self.fds.extend(passed);
        }
        (got, true)
    }

    /// The frame that a `SHARED`, `SLAB` or `SLAB_BACK` frame (`kind`)
    /// with `body` stands for: its tag, and the mapping that holds its
    /// payload. Any fault in it breaks the stream: the descriptors no
    /// longer match their frames.
    #[cold]
    fn stand_in_frame(&mut self, kind: u8, body: &[u8]) -> Result<(u8, Arc<Mapping>)> {
        let mapped = self.map_stand_in(kind, body);
        // The stream is broken whatever failed: the descriptor is gone.
        match &mapped {
            Err(Error::Codec { message }) => self.broken = Some(message.clone()),
            Err(other) => self.broken = Some(with_causes(other)),
            Ok(_) => {}
        }
        mapped
    }

    fn map_stand_in(&mut self, kind: u8, body: &[u8]) -> Result<(u8, Arc<Mapping>)> {
        let named = kind != tag::SHARED;
        let parsed = match body {
            [tag, rest @ ..]
                if rest.len() == if named { 12 } else { 8 }
                    && !is_stand_in(*tag)
                    && *tag != tag::RELEASE =>
            {
                let (slab, len) = rest.split_at(rest.len() - 8);
                let slab = u32::from_le_bytes(slab.try_into().unwrap_or_default());
                let len = u64::from_le_bytes(len.try_into().unwrap_or_default());
                usize::try_from(len)
                    .map(|len| (*tag, slab, len))
                    .map_err(|_| Error::codec("a shared-memory frame larger than memory"))
            }
            _ => Err(Error::codec(format_args!(
                "a shared-memory frame of {} bytes, not a tag{} and a length",
                body.len() + 1,
                if named { ", a slab" } else { "" }
            ))),
        };
        let (tag, slab, len) = parsed?;
        let fd =
            if kind == tag::SLAB_BACK {
                None
            } else {
                Some(self.fds.pop_front().ok_or_else(|| {
                    Error::codec("a shared-memory frame came without its descriptor")
                })?)
            };
        let mapping = match (kind, fd, &self.role) {
            (tag::SHARED, Some(fd), _) => Mapping::adopt(fd, len, self.max_frame),
            (tag::SLAB, Some(fd), Role::Borrower(releases)) => {
                Mapping::borrow(&fd, slab, len, self.max_frame, releases)
            }
            (tag::SLAB_BACK, None, Role::Lender(lent)) => lent.view(slab, len),
            (tag::SLAB, ..) => Err(Error::codec("a slab lent to a process that borrows none")),
            _ => Err(Error::codec("a slab sent back to a process that lent none")),
        }?;
        Ok((tag, mapping))
    }

    /// Consumes the `RELEASE` frame, `len` bytes long, at the head of the
    /// buffer: the child let go of a slab it was lent. A lie breaks the
    /// stream.
    #[cold]
    fn released(&mut self, len: usize) -> Result<()> {
        let at = self.rpos + HEADER;
        let body = &self.rbuf[at + 1..at + len];
        let done = match (&mut self.role, <[u8; 4]>::try_from(body)) {
            (Role::Lender(lent), Ok(slab)) => lent.release(u32::from_le_bytes(slab)),
            (Role::Lender(_), Err(_)) => Err(Error::codec(format_args!(
                "a release frame of {len} bytes, not a tag and a slab number"
            ))),
            _ => Err(Error::codec(
                "a release sent to a process that lent nothing",
            )),
        };
        if let Err(Error::Codec { message }) = &done {
            self.broken = Some(message.clone());
        }
        self.rpos = at + len;
        done
    }

    /// Hands the frame at the head of the buffer, `len` bytes long with its
    /// tag, to `read`, and consumes it; a frame in shared memory is handed
    /// over as the frame it stands for.
    #[inline]
    fn take<T>(&mut self, len: usize, read: impl FnOnce(u8, &[u8]) -> T) -> Result<T> {
        let at = self.rpos + HEADER;
        let kind = self.rbuf[at];
        if self.head_run().is_some()
            && let Some(run) = self.runs.pop_front()
        {
            return Ok(self.take_around(at, len, run, read));
        }
        if is_stand_in(kind) {
            let body: Vec<u8> = self.rbuf[at + 1..at + len].to_vec();
            let (tag, mapping) = self.stand_in_frame(kind, &body)?;
            self.rpos = at + len;
            return Ok(mapping.decoding(|| read(tag, mapping.bytes())));
        }
        let out = read(kind, &self.rbuf[at + 1..at + len]);
        self.rpos = at + len;
        Ok(out)
    }

    /// [`take`](Self::take) for a frame whose run was read in place.
    #[cold]
    fn take_around<T>(
        &mut self,
        at: usize,
        len: usize,
        run: InPlace,
        read: impl FnOnce(u8, &[u8]) -> T,
    ) -> T {
        let end = at + len - run.len;
        let run = codec::Run {
            at: run.at,
            bytes: run.bytes,
        };
        let out = codec::with_run(run, || read(self.rbuf[at], &self.rbuf[at + 1..end]));
        self.rpos = end;
        out
    }

    /// Bytes still missing from the frame at the head of the buffer, once
    /// its length is known and within the limit: those of a run read in
    /// place are not.
    fn missing(&self) -> usize {
        let have = &self.rbuf[self.rpos..];
        let run = self.head_run().map_or(0, |run| run.len);
        match codec::announced(have, 1, self.max_frame) {
            Ok(Some(len)) => (HEADER + len - run).saturating_sub(have.len()),
            _ => 0,
        }
    }

    /// Hands the next complete frame, if there is one, to `f` and consumes
    /// it. A length over the limit breaks the stream for good.
    pub(crate) fn with_frame<T>(&mut self, f: impl FnOnce(u8, &[u8]) -> T) -> Result<Option<T>> {
        let Some(len) = self.whole_frame()? else {
            return Ok(None);
        };
        self.take(len, f).map(Some)
    }

    /// Takes the frame at the head of the buffer and returns its body if
    /// it is a whole `DATA` frame and nothing else waits to be said: the
    /// short way for a stream of values, which [`next`](Self::next) takes
    /// too. The caller decodes the body in place, so that the value is
    /// built where it is returned.
    #[inline]
    pub(crate) fn next_data(&mut self) -> Option<&[u8]> {
        if self.deferred.is_some() || self.broken.is_some() {
            return None;
        }
        if !self.runs.is_empty() {
            return None;
        }
        let len = codec::whole_of(&self.rbuf[self.rpos..], tag::DATA, self.max_frame)?;
        let at = self.rpos + HEADER;
        self.rpos = at + len;
        Some(&self.rbuf[at + 1..at + len])
    }

    /// Lends what the buffer holds to `into`, for a stream of small
    /// values that receives then take one by one without the connection:
    /// returns where it starts there, and [`unlend`](Self::unlend) puts
    /// back what they did not take. Only whole `DATA` frames may be taken.
    ///
    /// A buffer of at most [`LEND_CAP`] bytes is lent whole: the two swap,
    /// and nothing is copied. From a larger one, the whole `DATA` frames at
    /// its head are copied, up to [`AHEAD`] bytes of them; a longer frame
    /// stays for [`next_data`](Self::next_data).
    pub(crate) fn lend_ahead(&mut self, into: &mut Vec<u8>) -> usize {
        into.clear();
        if self.deferred.is_some() || self.broken.is_some() || !self.runs.is_empty() {
            return 0;
        }
        // What points into the buffer is lost with it.
        (self.asked, self.scanned) = (None, 0);
        if self.rbuf.capacity() <= LEND_CAP {
            std::mem::swap(into, &mut self.rbuf);
            return std::mem::take(&mut self.rpos);
        }
        let start = self.rpos;
        let mut end = start;
        while let Some(len) = codec::whole_of(&self.rbuf[end..], tag::DATA, self.max_frame) {
            let next = end + HEADER + len;
            if next - start > AHEAD {
                break;
            }
            end = next;
        }
        into.extend_from_slice(&self.rbuf[start..end]);
        self.rpos = end;
        0
    }

    /// Puts back `buf[from..]`, lent by [`lend_ahead`](Self::lend_ahead)
    /// and not taken, in front of everything the buffer holds.
    pub(crate) fn unlend(&mut self, buf: &mut Vec<u8>, from: usize) {
        (self.asked, self.scanned) = (None, 0);
        if from < buf.len() {
            buf.extend_from_slice(&self.rbuf[self.rpos..]);
            std::mem::swap(buf, &mut self.rbuf);
            self.rpos = from;
        }
        buf.clear();
    }

    /// The most bytes a frame's header may announce.
    pub(crate) fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// The body length of the frame at the head of the buffer, once it
    /// has all arrived. `RELEASE` frames before it are consumed here.
    #[inline]
    fn whole_frame(&mut self) -> Result<Option<usize>> {
        loop {
            if let Some(why) = &self.broken {
                return Err(Error::codec(why));
            }
            let have = &self.rbuf[self.rpos..];
            let run = InPlace::whole(self.head_run());
            return match codec::announced(have, 1, self.max_frame) {
                Ok(Some(len)) if run.is_some_and(|run| have.len() + run >= HEADER + len) => {
                    if have[HEADER] == tag::RELEASE {
                        self.released(len)?;
                        continue;
                    }
                    Ok(Some(len))
                }
                Ok(_) => self.truncated(),
                Err(err) => {
                    // The stream lost its framing: nothing after this can be
                    // read.
                    if let Error::Codec { message } = &err {
                        self.broken = Some(message.clone());
                    }
                    Err(err)
                }
            };
        }
    }

    /// No complete frame: fine, unless the peer closed in the middle of one.
    fn truncated(&mut self) -> Result<Option<usize>> {
        if self.eof && self.rpos < self.rbuf.len() {
            let why = format!(
                "the peer closed the channel in the middle of a frame ({} bytes left over)",
                self.rbuf.len() - self.rpos
                    + self.runs.iter().map(|run| run.bytes.len()).sum::<usize>()
            );
            self.broken = Some(why.clone());
            self.runs.clear();
            return Err(Error::Codec { message: why });
        }
        Ok(None)
    }

    /// Hands the next frame, its tag and body, to `read`, waiting for one
    /// until `deadline`. `exit`, a pidfd, ends the wait once the peer
    /// process has exited and everything it wrote has been read.
    pub(crate) fn next<T>(
        &mut self,
        deadline: Deadline,
        exit: Option<BorrowedFd<'_>>,
        read: impl FnOnce(u8, &[u8]) -> T,
    ) -> Result<Next<T>> {
        if let Some(err) = self.deferred.take() {
            return Err(err);
        }
        let mut exited = false;
        loop {
            if let Some(len) = self.whole_frame()? {
                return self.take(len, read).map(Next::Frame);
            }
            if self.is_eof() {
                return Ok(Next::Closed);
            }
            if exited {
                return Ok(Next::Exited);
            }
            match self.wait(exit, deadline)? {
                Wake::Socket => {
                    self.fill()?;
                }
                Wake::Exited => {
                    // Whatever it wrote before exiting is in the socket now.
                    exited = true;
                    self.fill()?;
                }
                Wake::Timeout => return Ok(Next::Timeout),
            }
        }
    }

    /// Keeps `err` for the next receive.
    pub(crate) fn defer(&mut self, err: Error) {
        self.deferred = Some(err);
    }

    /// Waits until the socket is readable, `exit` (a pidfd) is readable, or
    /// the deadline passes.
    pub(crate) fn wait(
        &mut self,
        exit: Option<BorrowedFd<'_>>,
        deadline: Deadline,
    ) -> Result<Wake> {
        self.flush_before_waiting();
        let mut fds = vec![PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
        if let Some(exit) = exit {
            fds.push(PollFd::new(exit, PollFlags::POLLIN));
        }
        if !poll_until(&mut fds, deadline)? {
            return Ok(Wake::Timeout);
        }
        let ready = |fd: &PollFd<'_>| fd.revents().is_some_and(|r| !r.is_empty());
        if ready(&fds[0]) {
            Ok(Wake::Socket)
        } else {
            Ok(Wake::Exited)
        }
    }
}

impl Drop for Conn {
    /// What still waits goes out if the socket takes it now: a role that
    /// sends a value and returns (the manager's answer) needs no flush.
    fn drop(&mut self) {
        if self.out.is_dirty() {
            self.out.flush_now();
        }
    }
}

impl AsFd for Conn {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Whether a frame of `tag` stands for another, whose payload is in shared
/// memory.
fn is_stand_in(tag: u8) -> bool {
    matches!(tag, tag::SHARED | tag::SLAB | tag::SLAB_BACK)
}

/// The body of a frame that stands for a frame of `tag` and `len` bytes of
/// payload in shared memory: in slab `slab`, if it is in one.
fn stand_in(tag: u8, slab: Option<u32>, len: usize) -> Vec<u8> {
    let mut body = Vec::with_capacity(13);
    body.push(tag);
    if let Some(slab) = slab {
        body.extend_from_slice(&slab.to_le_bytes());
    }
    body.extend_from_slice(&(len as u64).to_le_bytes());
    body
}

/// Writes one frame (tag and payload) to the socket `fd`, waiting for room
/// without reading anything: for a writer whose socket another thread
/// reads.
pub(crate) fn write_frame(fd: BorrowedFd<'_>, tag: u8, payload: &[u8]) -> Result<()> {
    let [a, b, c, d] = codec::header(payload.len() + 1)?;
    send_all(fd, [&[a, b, c, d, tag], payload], wait_for_room)
}

/// Creates a connected pair of close-on-exec stream sockets.
pub(crate) fn socketpair() -> Result<(OwnedFd, OwnedFd)> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
    socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|err| Error::Spawn(io::Error::from(err)))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::wire::bytes::Bytes;
    use crate::wire::codec::decode;
    use crate::wire::frame::tag;
    use crate::wire::outbox::{DEFAULT_FLUSH_AFTER, FLUSH_AT, Pushed};

    fn pair() -> (Conn, Conn) {
        let (a, b) = socketpair().unwrap();
        (Conn::new(a).unwrap(), Conn::new(b).unwrap())
    }

    fn next(conn: &mut Conn) -> Result<Option<(u8, Vec<u8>)>> {
        conn.with_frame(|tag, body| (tag, body.to_vec()))
    }

    #[test]
    fn frames_round_trip() {
        let (mut a, mut b) = pair();
        a.send_value(tag::DATA, &(1u8, "two".to_string())).unwrap();
        a.send_bytes(tag::RESULT, &[]).unwrap();
        b.fill().unwrap();
        let (t, body) = next(&mut b).unwrap().unwrap();
        assert_eq!(t, tag::DATA);
        assert_eq!(decode::<(u8, String)>(&body).unwrap(), (1, "two".into()));
        assert_eq!(next(&mut b).unwrap(), Some((tag::RESULT, vec![])));
        assert_eq!(next(&mut b).unwrap(), None);
    }

    #[test]
    fn oversized_length_is_refused_and_breaks_the_stream() {
        let (mut a, mut b) = pair();
        b.set_max_frame(16);
        a.send_bytes(tag::DATA, &[7; 32]).unwrap();
        a.flush().unwrap();
        b.fill().unwrap();
        assert!(matches!(next(&mut b), Err(Error::Codec { .. })));
        assert!(matches!(next(&mut b), Err(Error::Codec { .. })));
    }

    #[test]
    fn truncated_frame_at_eof_is_a_codec_error() {
        let (a, mut b) = pair();
        nix::unistd::write(&*a.fd, &[10, 0, 0, 0, tag::DATA, 1]).unwrap();
        drop(a);
        // The first read returns the bytes; the next one sees the end.
        b.fill().unwrap();
        b.fill().unwrap();
        assert!(matches!(next(&mut b), Err(Error::Codec { .. })));
    }

    /// Reads frames off `conn` until `n` have come, or the stream ends.
    fn read_frames(conn: &mut Conn, n: usize) -> Result<Vec<(u8, Vec<u8>)>> {
        let mut out = Vec::new();
        while out.len() < n {
            if let Some(frame) = next(conn)? {
                out.push(frame);
                continue;
            }
            if conn.is_eof() {
                break;
            }
            conn.wait(None, Deadline::Never)?;
            conn.fill()?;
        }
        Ok(out)
    }

    #[test]
    fn only_large_bytes_cross_in_shared_memory() {
        let (mut a, mut b) = pair();
        let big = vec![3u8; shm::SHARED_FROM];
        let text = "x".repeat(shm::SHARED_FROM);
        let writer = std::thread::spawn(move || {
            a.send_value(tag::DATA, &(1u8, Bytes::from(big))).unwrap();
            // A string of the same length would be copied out again: it
            // goes through the socket.
            a.send_value(tag::DATA, &text).unwrap();
            a.flush().unwrap();
            a
        });
        let mut got = Vec::new();
        let mut passed = 0;
        while got.len() < 2 {
            b.wait(None, Deadline::Never).unwrap();
            b.fill().unwrap();
            passed += b.fds.len();
            while let Some(value) = b
                .with_frame(|tag, body| {
                    assert_eq!(tag, tag::DATA);
                    body.len()
                })
                .unwrap()
            {
                got.push(value);
            }
        }
        let _a = writer.join().unwrap();
        assert_eq!(passed, 1, "one descriptor, for the bytes");
        assert!(b.fds.is_empty());
        // The tuple's first byte, the length's four, the bytes; the string.
        assert_eq!(got, [1 + 5 + shm::SHARED_FROM, 5 + shm::SHARED_FROM]);
    }

    #[test]
    fn long_byte_runs_go_out_from_the_value_itself() {
        let (mut a, mut b) = pair();
        let run: Vec<u8> = (0..3u32 << 20).map(|i| i.to_le_bytes()[1]).collect();
        let value = (7u8, Bytes::from(run.clone()), "tail", Bytes::from(run));
        let sent = (
            value.0,
            value.1.clone(),
            value.2.to_owned(),
            value.3.clone(),
        );
        let writer = std::thread::spawn(move || {
            a.send_value(tag::DATA, &value).unwrap();
            a.send_bytes(tag::RESULT, &vec![9; 100_000]).unwrap();
            a.send_value(tag::DATA, &Bytes::from(vec![1; 70_000]))
                .unwrap();
        });
        let frames = read_frames(&mut b, 3).unwrap();
        writer.join().unwrap();
        assert_eq!(frames[0].0, tag::DATA);
        assert_eq!(
            decode::<(u8, Bytes, String, Bytes)>(&frames[0].1).unwrap(),
            sent
        );
        assert_eq!(frames[1], (tag::RESULT, vec![9; 100_000]));
        assert_eq!(decode::<Bytes>(&frames[2].1).unwrap(), vec![1; 70_000]);
    }

    #[test]
    fn a_long_run_sent_while_values_wait_goes_out_whole_in_order() {
        let (mut a, mut b) = pair();
        let run = vec![4u8; codec::LONG_RUN];
        let writer = std::thread::spawn(move || {
            a.send_value(tag::DATA, &1u8).unwrap();
            let outbox = a.outbox();
            let bytes = Bytes::from(run);
            assert_eq!(
                outbox.push(tag::DATA, &bytes).unwrap(),
                crate::wire::outbox::Pushed::Refused
            );
            a.send_value(tag::DATA, &bytes).unwrap();
            a.send_value(tag::DATA, &2u8).unwrap();
            a.flush().unwrap();
        });
        let frames = read_frames(&mut b, 3).unwrap();
        writer.join().unwrap();
        assert_eq!(frames[0], (tag::DATA, vec![1]));
        assert_eq!(
            decode::<Bytes>(&frames[1].1).unwrap(),
            vec![4; codec::LONG_RUN]
        );
        assert_eq!(frames[2], (tag::DATA, vec![2]));
    }

    /// Serializes a longer run each time.
    struct Shifty(std::cell::Cell<usize>);

    impl Serialize for Shifty {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let n = self.0.get();
            self.0.set(n + 1);
            s.serialize_bytes(&vec![1; codec::LONG_RUN + n])
        }
    }

    #[test]
    fn a_value_that_serializes_differently_is_never_sent_wrong() {
        // The first run differs: nothing was written, the channel goes on.
        let (mut a, mut b) = pair();
        let err = a.send_value(tag::DATA, &Shifty(0.into())).unwrap_err();
        assert!(matches!(err, Error::Codec { .. }), "{err:?}");
        a.send_value(tag::DATA, &5u8).unwrap();
        a.flush().unwrap();
        assert_eq!(read_frames(&mut b, 1).unwrap(), [(tag::DATA, vec![5])]);
        // A later run differs: the frame is cut short, and the peer reads
        // an error, not a value.
        let value = (Bytes::from(vec![2; codec::LONG_RUN]), Shifty(0.into()));
        let writer = std::thread::spawn(move || {
            let err = a.send_value(tag::DATA, &value).unwrap_err();
            assert!(matches!(err, Error::Codec { .. }), "{err:?}");
            assert!(matches!(
                a.send_value(tag::DATA, &1u8),
                Err(Error::Codec { .. })
            ));
        });
        assert!(matches!(read_frames(&mut b, 1), Err(Error::Codec { .. })));
        writer.join().unwrap();
    }

    /// A `DATA` frame of `body`.
    fn data_frame(body: &[u8]) -> Vec<u8> {
        let mut frame = codec::header(body.len() + 1).unwrap().to_vec();
        frame.push(tag::DATA);
        frame.extend_from_slice(body);
        frame
    }

    /// A connection that reads `(u32, String)` values, and a thread that
    /// writes `bytes` to it and closes its end.
    fn reading_runs(bytes: Vec<u8>) -> (Conn, std::thread::JoinHandle<()>) {
        use std::io::Write;
        let (ours, mut theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut conn = Conn::new(ours.into()).unwrap();
        conn.read_runs_as(codec::locator::<(u32, String)>());
        let writer = std::thread::spawn(move || {
            // The reader may stop reading at an error: then this fails.
            let _ = theirs.write_all(&bytes);
        });
        (conn, writer)
    }

    /// The next frame, decoded as `(u32, String)`.
    fn next_pair(conn: &mut Conn) -> Result<Option<(u32, String)>> {
        match conn.next(Deadline::Never, None, |_, body| decode(body))? {
            Next::Frame(value) => value.map(Some),
            _ => Ok(None),
        }
    }

    #[test]
    fn long_runs_are_read_in_place_among_other_frames() {
        let long = |n: usize, c: char| std::iter::repeat_n(c, n).collect::<String>();
        let values = [
            (1, "a".to_owned()),
            (2, long(3 << 20, 'x')),
            (3, long(10, 'y')),
            (4, long(codec::IN_PLACE, 'é')),
            (5, long(codec::IN_PLACE + 1, 'z')),
        ];
        let bytes = values
            .iter()
            .flat_map(|value| data_frame(&codec::encode(value).unwrap()))
            .collect();
        let (mut conn, writer) = reading_runs(bytes);
        for value in &values {
            assert_eq!(next_pair(&mut conn).unwrap().as_ref(), Some(value));
        }
        assert_eq!(next_pair(&mut conn).unwrap(), None);
        writer.join().unwrap();
        // The long strings never passed through the receive buffer.
        assert!(conn.rbuf.capacity() < 1 << 20, "{}", conn.rbuf.capacity());
    }

    #[test]
    fn a_body_read_around_its_run_is_whole_to_a_reader_that_copies_it() {
        let value = (9_u32, "q".repeat(2 << 20));
        let body = codec::encode(&value).unwrap();
        let (mut conn, writer) = reading_runs(data_frame(&body));
        let got = loop {
            if let Some(got) = conn.with_frame(|_, body| codec::owned_body(body)).unwrap() {
                break got;
            }
            conn.wait(None, Deadline::Never).unwrap();
            conn.fill().unwrap();
        };
        writer.join().unwrap();
        assert!(got == body);
    }

    #[test]
    fn a_run_that_lies_or_is_cut_short_is_a_codec_error() {
        let mib = 1 << 20;
        // The length of a string: bincode's varint of a `u32`.
        let length = |n: usize| [&[0xfc][..], &u32::try_from(n).unwrap().to_le_bytes()].concat();
        let body = |parts: &[&[u8]]| parts.concat();
        let cases: [(Vec<u8>, &str); 3] = [
            // A string that claims more than its frame holds.
            (
                data_frame(&body(&[&[7], &length(3 * mib), &vec![b'a'; 2 * mib]])),
                "too soon",
            ),
            // Bytes that are not UTF-8.
            (
                data_frame(&body(&[&[7], &length(2 * mib), &vec![0xff; 2 * mib]])),
                "UTF-8",
            ),
            // A frame cut in the middle of its run.
            (
                data_frame(&body(&[&[7], &length(2 * mib), &vec![b'a'; 2 * mib]]))[..mib].to_vec(),
                "in the middle of a frame",
            ),
        ];
        for (bytes, why) in cases {
            let (mut conn, writer) = reading_runs(bytes);
            match next_pair(&mut conn) {
                Err(Error::Codec { message }) => assert!(message.contains(why), "{message}"),
                other => panic!("{why}: {other:?}"),
            }
            writer.join().unwrap();
        }
    }

    #[test]
    fn a_header_that_claims_a_gigabyte_reserves_what_arrived() {
        let (a, mut b) = pair();
        let mut frame = codec::header(1 << 30).unwrap().to_vec();
        frame.push(tag::DATA);
        frame.extend_from_slice(&[0; 1000]);
        nix::unistd::write(&*a.fd, &frame).unwrap();
        b.fill().unwrap();
        assert!(b.rbuf.capacity() < 1 << 20, "{}", b.rbuf.capacity());
        assert_eq!(next(&mut b).unwrap(), None);
    }

    #[test]
    fn values_wait_for_a_frame_that_is_not_one() {
        let (mut a, mut b) = pair();
        // No bound: only the frames below write them out.
        a.outbox().set_after(Duration::MAX);
        for i in 0..3u8 {
            a.send_value(tag::DATA, &i).unwrap();
        }
        a.send_value(tag::ERROR, "e").unwrap();
        assert_eq!(b.fill().unwrap(), 0);
        a.send_bytes(tag::RESULT, &[9]).unwrap();
        let frames = read_frames(&mut b, 5).unwrap();
        let tags: Vec<u8> = frames.iter().map(|(tag, _)| *tag).collect();
        assert_eq!(
            tags,
            [tag::DATA, tag::DATA, tag::DATA, tag::ERROR, tag::RESULT]
        );
        assert_eq!(frames[2].1, [2]);
    }

    #[test]
    fn the_flusher_writes_out_what_an_idle_sender_left() {
        let (mut a, mut b) = pair();
        a.send_value(tag::DATA, &7u8).unwrap();
        a.send_value(tag::DATA, &8u8).unwrap();
        // Nobody flushes: the flusher does, well within the wait.
        let frames = read_frames(&mut b, 2).unwrap();
        assert_eq!(frames, [(tag::DATA, vec![7]), (tag::DATA, vec![8])]);
        // Without a bound, each value is written at once.
        a.outbox().set_after(Duration::ZERO);
        a.send_value(tag::DATA, &9u8).unwrap();
        b.fill().unwrap();
        assert_eq!(next(&mut b).unwrap(), Some((tag::DATA, vec![9])));
    }

    #[test]
    fn a_value_after_a_pause_goes_out_at_once() {
        let (mut a, mut b) = pair();
        std::thread::sleep(DEFAULT_FLUSH_AFTER * 2);
        a.send_value(tag::DATA, &1u8).unwrap();
        b.fill().unwrap();
        assert_eq!(next(&mut b).unwrap(), Some((tag::DATA, vec![1])));
    }

    /// Panics halfway through serializing.
    struct Halfway;

    impl Serialize for Halfway {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeTuple;
            let mut t = s.serialize_tuple(2)?;
            t.serialize_element(&1u32)?;
            panic!("halfway");
        }
    }

    #[test]
    fn a_panic_while_serializing_leaves_no_half_frame() {
        let (mut a, mut b) = pair();
        a.send_value(tag::DATA, &1u8).unwrap();
        let outbox = a.outbox();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = outbox.push(tag::DATA, &Halfway);
        }));
        assert!(panicked.is_err());
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = a.send_value(tag::DATA, &Halfway);
        }));
        assert!(panicked.is_err());
        a.send_value(tag::DATA, &2u8).unwrap();
        a.flush().unwrap();
        let frames = read_frames(&mut b, 2).unwrap();
        assert_eq!(frames, [(tag::DATA, vec![1]), (tag::DATA, vec![2])]);
        assert_eq!(b.fill().unwrap(), 0);
    }

    #[test]
    fn big_writes_both_ways_do_not_deadlock() {
        let (mut a, mut b) = pair();
        let payload = vec![5u8; 8 << 20];
        let other = payload.clone();
        let t = std::thread::spawn(move || {
            b.send_bytes(tag::DATA, &other).unwrap();
            loop {
                if let Some(len) = b.with_frame(|_, body| body.len()).unwrap() {
                    return len;
                }
                b.wait(None, Deadline::Never).unwrap();
                b.fill().unwrap();
            }
        });
        a.send_bytes(tag::DATA, &payload).unwrap();
        let got = loop {
            if let Some(len) = a.with_frame(|_, body| body.len()).unwrap() {
                break len;
            }
            a.wait(None, Deadline::Never).unwrap();
            a.fill().unwrap();
        };
        assert_eq!(got, 8 << 20);
        assert_eq!(t.join().unwrap(), 8 << 20);
    }

    /// Reads `n` frames off `conn`.
    fn frames(conn: &mut Conn, n: usize) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        while out.len() < n {
            if let Some(frame) = conn.with_frame(|tag, body| (tag, body.to_vec())).unwrap() {
                out.push(frame);
                continue;
            }
            conn.wait(None, Deadline::Never).unwrap();
            conn.fill().unwrap();
        }
        out
    }

    /// The length of the whole `DATA` frame at `buf[at..]`, if there is one.
    fn data_at(buf: &[u8], at: usize) -> Option<usize> {
        codec::whole_of(buf.get(at..)?, tag::DATA, usize::MAX).map(|len| HEADER + len)
    }

    #[test]
    fn lent_bytes_not_taken_go_back_in_front_of_what_came_since() {
        let (mut a, mut b) = pair();
        for v in 1_u8..=3 {
            a.send_value(tag::DATA, &v).unwrap();
        }
        a.send_bytes(tag::RESULT, &[4]).unwrap();
        a.flush().unwrap();
        b.fill().unwrap();
        let mut lent = Vec::new();
        let mut at = b.lend_ahead(&mut lent);
        // Lent whole: nothing is left behind.
        assert_eq!(b.rbuf.len(), 0);
        at += data_at(&lent, at).unwrap();
        // What comes meanwhile waits behind what was lent.
        a.send_value(tag::DATA, &5_u8).unwrap();
        a.flush().unwrap();
        b.wait(None, Deadline::Never).unwrap();
        b.fill().unwrap();
        b.unlend(&mut lent, at);
        assert!(lent.is_empty());
        assert_eq!(
            frames(&mut b, 4),
            [
                (tag::DATA, vec![2]),
                (tag::DATA, vec![3]),
                (tag::RESULT, vec![4]),
                (tag::DATA, vec![5])
            ]
        );
    }

    #[test]
    fn a_large_receive_buffer_lends_a_copy_of_a_few_whole_data_frames() {
        let (mut a, mut b) = pair();
        b.rbuf.reserve(2 * LEND_CAP);
        let n = 2_000_u64;
        for v in 0..n {
            a.send_value(tag::DATA, &v).unwrap();
        }
        a.send_bytes(tag::RESULT, &[]).unwrap();
        a.flush().unwrap();
        let mut got = Vec::new();
        let mut lent = Vec::new();
        while got.len() < usize::try_from(n).unwrap() {
            if data_at(&b.rbuf, b.rpos).is_none() {
                b.wait(None, Deadline::Never).unwrap();
                b.fill().unwrap();
            }
            // (Frames given back may leave the buffer a smaller one.)
            b.rbuf.reserve(2 * LEND_CAP);
            let mut at = b.lend_ahead(&mut lent);
            assert!(lent.len() <= AHEAD);
            // Only whole `DATA` frames are copied, and then taken, but for
            // one in three runs, whose rest goes back.
            let keep = got.len() % 3 == 0;
            while let Some(len) = data_at(&lent, at) {
                got.push(decode::<u64>(&lent[at + HEADER + 1..at + len]).unwrap());
                at += len;
                if keep {
                    break;
                }
            }
            assert!(keep || at == lent.len());
            b.unlend(&mut lent, at);
            while let Some(v) = b.next_data().map(|body| decode::<u64>(body).unwrap()) {
                got.push(v);
                if got.len() % 7 == 0 {
                    break;
                }
            }
        }
        assert_eq!(got, (0..n).collect::<Vec<_>>());
        assert_eq!(frames(&mut b, 1), [(tag::RESULT, vec![])]);
    }

    #[test]
    fn values_in_the_lane_keep_their_place_among_other_frames() {
        let (mut a, mut b) = pair();
        let outbox = a.outbox();
        outbox.set_after(Duration::MAX);
        a.send_value(tag::DATA, &1_u8).unwrap();
        // Values wait: the next ones go to the lane.
        assert_eq!(outbox.push(tag::DATA, &2_u8).unwrap(), Pushed::Held);
        assert!(outbox.lane_holds_frames());
        assert_eq!(outbox.push(tag::ERROR, "3").unwrap(), Pushed::Held);
        a.send_value(tag::DATA, &4_u8).unwrap();
        assert_eq!(outbox.push(tag::DATA, &5_u8).unwrap(), Pushed::Held);
        a.send_bytes(tag::RESULT, &[6]).unwrap();
        let got = frames(&mut b, 6);
        let tags: Vec<u8> = got.iter().map(|(tag, _)| *tag).collect();
        assert_eq!(
            tags,
            [
                tag::DATA,
                tag::DATA,
                tag::ERROR,
                tag::DATA,
                tag::DATA,
                tag::RESULT
            ]
        );
        assert_eq!(got[4].1, [5]);
    }

    #[test]
    fn a_lane_that_fills_asks_for_a_write_and_writing_at_once_closes_it() {
        let (mut a, mut b) = pair();
        let outbox = a.outbox();
        outbox.set_after(Duration::MAX);
        a.send_value(tag::DATA, &0_u64).unwrap();
        let mut sent = 1;
        while outbox.push(tag::DATA, &u64::MAX).unwrap() == Pushed::Held {
            sent += 1;
        }
        sent += 1;
        // Each frame: a header, a tag, nine bytes of varint.
        assert!(sent * 14 >= FLUSH_AT, "full after {sent} values");
        a.flush().unwrap();
        assert_eq!(frames(&mut b, sent).len(), sent);
        a.send_value(tag::DATA, &1_u8).unwrap();
        outbox.set_after(Duration::ZERO);
        // Written at once now, through the connection.
        assert_eq!(outbox.push(tag::DATA, &2_u8).unwrap(), Pushed::Refused);
        a.send_value(tag::DATA, &2_u8).unwrap();
        assert_eq!(
            frames(&mut b, 2),
            [(tag::DATA, vec![1]), (tag::DATA, vec![2])]
        );
    }

    #[test]
    fn the_lane_joins_the_bytes_waiting_before_it_few_or_many() {
        // A value of a few bytes waits ahead of the lane, which keeps room
        // for it at its front; then one longer than that room.
        for first in [vec![1_u64], (0..2_000).collect::<Vec<u64>>()] {
            let (mut a, mut b) = pair();
            let outbox = a.outbox();
            outbox.set_after(Duration::MAX);
            for round in 0..3_u64 {
                a.send_value(tag::DATA, &first).unwrap();
                for i in 0..100 {
                    let pushed = outbox.push(tag::DATA, &vec![round, i]).unwrap();
                    assert_eq!(pushed, Pushed::Held);
                }
                assert!(outbox.lane_holds_frames());
                a.flush().unwrap();
                let got = frames(&mut b, 101);
                assert_eq!(decode::<Vec<u64>>(&got[0].1).unwrap(), first);
                for (i, (tag, body)) in (0..).zip(&got[1..]) {
                    assert_eq!(*tag, tag::DATA);
                    assert_eq!(decode::<Vec<u64>>(body).unwrap(), [round, i]);
                }
            }
        }
    }

    #[test]
    fn the_flusher_writes_out_the_lane_of_an_idle_sender() {
        let (mut a, mut b) = pair();
        let outbox = a.outbox();
        a.send_value(tag::DATA, &7_u8).unwrap();
        assert_eq!(outbox.push(tag::DATA, &8_u8).unwrap(), Pushed::Held);
        // Nobody flushes: the flusher does.
        assert_eq!(
            frames(&mut b, 2),
            [(tag::DATA, vec![7]), (tag::DATA, vec![8])]
        );
    }
}
