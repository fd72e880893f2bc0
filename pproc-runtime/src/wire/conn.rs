//! Framing over a non-blocking Unix stream socket (the frames themselves
//! are in [`frame`](super::frame)).
//!
//! Writes never deadlock against a peer that is
//! writing too: while a write waits for room, whatever the peer sends is read
//! into the receive buffer, so both ends keep draining each other.

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags};
use nix::sys::socket::{MsgFlags, send, sendmsg};
use serde::Serialize;

use super::codec::{self, HEADER, Hole};
use super::frame::tag;
use super::log;
use super::wait::{Deadline, poll_until};
use crate::error::{Error, Result};

/// The default limit on a frame's body, in bytes: larger frames are refused
/// before anything is allocated for them.
pub const DEFAULT_MAX_FRAME: usize = 1 << 30;

/// The largest write buffer a connection keeps between sends: a longer
/// one (a large value that is not a byte run) is freed once it is sent.
const KEEP_WBUF: usize = 1 << 20;

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
    /// The frame being sent, kept from send to send for its capacity.
    wbuf: Vec<u8>,
    /// The long byte runs of the frame being sent.
    holes: Vec<Hole>,
    /// Set when a send failed in the middle of a frame: nothing more can
    /// be sent.
    wbroken: Option<String>,
    /// A worker's result log: its answers go there rather than into the
    /// socket (see [`log`]).
    log: Option<log::Writer>,
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
        let flags = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFL)?;
        let flags = nix::fcntl::OFlag::from_bits_retain(flags) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFL(flags))?;
        Ok(Self {
            fd: Arc::new(fd),
            rbuf: Vec::new(),
            rpos: 0,
            max_frame: DEFAULT_MAX_FRAME,
            eof: false,
            broken: None,
            deferred: None,
            wbuf: Vec::new(),
            holes: Vec::new(),
            wbroken: None,
            log: None,
        })
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

    /// Announces what the log holds and the parent was not told of yet.
    pub(crate) fn announce_log(&mut self) -> Result<()> {
        match self.log_frame() {
            Some(frame) => self.write_all([&frame[..]]),
            None => Ok(()),
        }
    }

    /// The `LOG` frame for what the log holds unannounced, if anything.
    fn log_frame(&mut self) -> Option<[u8; HEADER + 1 + 8]> {
        let log = self.log.as_mut().filter(|log| log.pending())?;
        let mut frame = [0; HEADER + 1 + 8];
        frame[..HEADER].copy_from_slice(&(1 + 8_u32).to_le_bytes());
        frame[HEADER] = tag::LOG;
        frame[HEADER + 1..].copy_from_slice(&log.announce());
        Some(frame)
    }

    /// Sends the whole frame `frame`: into the log, where there is one and
    /// it fits, or else into the socket, after a `LOG` frame for what the
    /// log holds, so that the parent reads everything in order.
    fn write_frame(&mut self, tag: u8, frame: &[u8]) -> Result<()> {
        if let Some(log) = self.log.as_mut()
            && matches!(
                tag,
                tag::DATA | tag::ERROR | tag::RESULT | tag::PANIC | tag::FAIL
            )
            && log.append(frame)
        {
            // A call's end is announced at once when no call waits behind
            // it: its batch is over, and the parent waits for it.
            let overdue = log.overdue();
            let over = matches!(tag, tag::RESULT | tag::PANIC | tag::FAIL) && !self.has_frame();
            if over || overdue {
                return self.announce_log();
            }
            return Ok(());
        }
        match self.log_frame() {
            Some(announce) => self.write_all([&announce[..], frame]),
            None => self.write_all([frame]),
        }
    }

    /// Whether a whole frame has been received and not taken yet.
    fn has_frame(&self) -> bool {
        matches!(
            codec::split_frame(&self.rbuf[self.rpos..], 1, self.max_frame),
            Ok(Some(_))
        )
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

    /// Sends one frame whose payload is `value` serialized. The frame is
    /// encoded into a buffer the connection keeps from send to send, but
    /// for long byte runs (a [`Bytes`](crate::Bytes) payload), which are
    /// written to the socket from the value itself.
    pub(crate) fn send_value<T: Serialize + ?Sized>(&mut self, tag: u8, value: &T) -> Result<()> {
        if let Some(why) = &self.wbroken {
            return Err(Error::codec(why));
        }
        let mut wbuf = std::mem::take(&mut self.wbuf);
        let mut holes = std::mem::take(&mut self.holes);
        wbuf.clear();
        holes.clear();
        wbuf.extend_from_slice(&[0; HEADER]);
        wbuf.push(tag);
        let sent = codec::encode_gathered(value, &mut wbuf, &mut holes).and_then(|len| {
            wbuf[..HEADER].copy_from_slice(&codec::header(len + 1)?);
            if holes.is_empty() {
                self.write_frame(tag, &wbuf)
            } else {
                self.announce_log()?;
                self.write_gathered(value, &wbuf, &holes, len)
            }
        });
        self.keep_wbuf(wbuf);
        self.holes = holes;
        sent
    }

    /// Sends one frame whose payload is already serialized: a long one is
    /// written from `payload` as it is, a short one copied behind its
    /// header to go out in one write.
    pub(crate) fn send_bytes(&mut self, tag: u8, payload: &[u8]) -> Result<()> {
        if let Some(why) = &self.wbroken {
            return Err(Error::codec(why));
        }
        self.announce_log()?;
        let [a, b, c, d] = codec::header(payload.len() + 1)?;
        if payload.len() >= codec::LONG_RUN {
            return self.write_all([&[a, b, c, d, tag], payload]);
        }
        let mut wbuf = std::mem::take(&mut self.wbuf);
        wbuf.clear();
        wbuf.extend_from_slice(&[a, b, c, d, tag]);
        wbuf.extend_from_slice(payload);
        let sent = self.write_all([&wbuf[..]]);
        self.keep_wbuf(wbuf);
        sent
    }

    /// Puts the write buffer back for the next send, unless it grew past
    /// what is worth keeping.
    fn keep_wbuf(&mut self, wbuf: Vec<u8>) {
        if wbuf.capacity() <= KEEP_WBUF {
            self.wbuf = wbuf;
        }
    }

    /// Sends frames that are already whole (headers included), in one
    /// write.
    pub(crate) fn send_framed(&mut self, frames: &[u8]) -> Result<()> {
        self.write_all([frames])
    }

    /// Writes a frame that [`codec::encode_gathered`] encoded into `wbuf`
    /// with `holes`: the pieces of `wbuf` and, between them, the runs that
    /// a second serialization of `value` hands over. The frame's last byte
    /// waits until the second serialization has matched the first, so a
    /// value that serializes differently leaves a frame cut short (the
    /// socket is shut, and the peer reads an error), never a wrong one.
    fn write_gathered<T: Serialize + ?Sized>(
        &mut self,
        value: &T,
        wbuf: &[u8],
        holes: &[Hole],
        len: usize,
    ) -> Result<()> {
        // `wbuf` up to `done` is written; `skipped` bytes of runs are not
        // in it.
        let mut done = 0;
        let mut skipped = 0;
        let mut held = None;
        let replayed = codec::replay(value, holes, len, |i, run| {
            let upto = HEADER + 1 + holes[i].at - skipped;
            skipped += run.len();
            let piece = &wbuf[done..upto];
            done = upto;
            let run = if i + 1 == holes.len() && done == wbuf.len() {
                let (last, run) = run.split_last().unwrap_or((&0, run));
                held = Some(*last);
                run
            } else {
                run
            };
            self.write_all([piece, run])
        });
        if let Err(err) = replayed {
            if done > 0 {
                // A frame is cut short: nothing more can be sent after it.
                let why = format!("a send failed in the middle of a frame: {err}");
                self.wbroken = Some(why);
                let _ = nix::sys::socket::shutdown(
                    self.fd.as_raw_fd(),
                    nix::sys::socket::Shutdown::Write,
                );
            }
            return Err(err);
        }
        let last = held.as_slice();
        self.write_all([&wbuf[done..], last])
    }

    /// Writes `parts` in order, whole, in as few writes as the socket
    /// allows. While the socket has no room, whatever the peer sends is
    /// read into the receive buffer.
    fn write_all<const N: usize>(&mut self, parts: [&[u8]; N]) -> Result<()> {
        let fd = Arc::clone(&self.fd);
        send_all(fd.as_fd(), parts, |fd| {
            let mut fds = [PollFd::new(fd, PollFlags::POLLOUT | PollFlags::POLLIN)];
            poll_until(&mut fds, Deadline::Never)?;
            let revents = fds[0].revents().unwrap_or(PollFlags::empty());
            if revents.intersects(PollFlags::POLLIN) && !self.eof {
                // Drain the peer while we wait for room, or two writers
                // would wait on each other forever.
                self.fill()?;
            }
            Ok(())
        })
    }

    /// Reads whatever the socket holds now into the receive buffer, without
    /// blocking. Returns the number of bytes read.
    pub(crate) fn fill(&mut self) -> Result<usize> {
        let mut total = 0;
        loop {
            if self.rpos > 0 && self.rpos == self.rbuf.len() {
                self.rbuf.clear();
                self.rpos = 0;
            } else if self.rpos > 0 && self.rpos >= self.rbuf.len() / 2 {
                self.rbuf.drain(..self.rpos);
                self.rpos = 0;
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
            let start = self.rbuf.len();
            let spare = &mut self.rbuf.spare_capacity_mut()[..want];
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
            match usize::try_from(got) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(total);
                }
                Ok(n) => {
                    // SAFETY: `recv` initialized the first `n` bytes of the
                    // spare capacity.
                    unsafe { self.rbuf.set_len(start + n) };
                    total += n;
                    if n < want {
                        return Ok(total);
                    }
                }
                Err(_) => match Errno::last() {
                    Errno::EINTR => {}
                    Errno::EAGAIN => return Ok(total),
                    Errno::ECONNRESET => {
                        self.eof = true;
                        return Ok(total);
                    }
                    err => return Err(err.into()),
                },
            }
        }
    }

    /// Bytes still missing from the frame at the head of the buffer, once
    /// its length is known and within the limit.
    fn missing(&self) -> usize {
        let have = &self.rbuf[self.rpos..];
        match codec::announced(have, 1, self.max_frame) {
            Ok(Some(len)) => (HEADER + len).saturating_sub(have.len()),
            _ => 0,
        }
    }

    /// Hands the next complete frame, if there is one, to `f` and consumes
    /// it. A length over the limit breaks the stream for good.
    pub(crate) fn with_frame<T>(&mut self, f: impl FnOnce(u8, &[u8]) -> T) -> Result<Option<T>> {
        if let Some(why) = &self.broken {
            return Err(Error::codec(why));
        }
        let body = match codec::split_frame(&self.rbuf[self.rpos..], 1, self.max_frame) {
            Ok(Some(body)) => body,
            Ok(None) => return self.truncated(),
            Err(err) => {
                // The stream lost its framing: nothing after this can be read.
                if let Error::Codec { message } = &err {
                    self.broken = Some(message.clone());
                }
                return Err(err);
            }
        };
        let out = f(body[0], &body[1..]);
        self.rpos += HEADER + body.len();
        Ok(Some(out))
    }

    /// No complete frame: fine, unless the peer closed in the middle of one.
    fn truncated<T>(&mut self) -> Result<Option<T>> {
        if self.eof && self.rpos < self.rbuf.len() {
            let why = format!(
                "the peer closed the channel in the middle of a frame ({} bytes left over)",
                self.rbuf.len() - self.rpos
            );
            self.broken = Some(why.clone());
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
        let mut read = Some(read);
        let mut exited = false;
        loop {
            if let Some(Some(out)) =
                self.with_frame(|tag, body| read.take().map(|f| f(tag, body)))?
            {
                return Ok(Next::Frame(out));
            }
            if self.is_eof() {
                return Ok(Next::Closed);
            }
            if exited {
                return Ok(Next::Exited);
            }
            // Nothing the parent waits for stays in the log while we wait.
            self.announce_log()?;
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
    pub(crate) fn wait(&self, exit: Option<BorrowedFd<'_>>, deadline: Deadline) -> Result<Wake> {
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

impl AsFd for Conn {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Writes `parts` in order, whole, to the non-blocking socket `fd`, calling
/// `wait` whenever it has no room.
fn send_all<const N: usize>(
    fd: BorrowedFd<'_>,
    parts: [&[u8]; N],
    mut wait: impl FnMut(BorrowedFd<'_>) -> Result<()>,
) -> Result<()> {
    let mut slices = parts.map(IoSlice::new);
    let mut left = &mut slices[..];
    // Empty parts at the front need no write.
    IoSlice::advance_slices(&mut left, 0);
    while !left.is_empty() {
        let sent = if let [one] = left {
            send(fd.as_raw_fd(), one, MsgFlags::MSG_NOSIGNAL)
        } else {
            sendmsg::<()>(fd.as_raw_fd(), left, &[], MsgFlags::MSG_NOSIGNAL, None)
        };
        match sent {
            Ok(n) => IoSlice::advance_slices(&mut left, n),
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => wait(fd)?,
            Err(Errno::EPIPE | Errno::ECONNRESET) => return Err(Error::Disconnected),
            Err(err) => return Err(err.into()),
        }
    }
    Ok(())
}

/// Writes one frame (tag and payload) to the socket `fd`, waiting for room
/// without reading anything: for a writer whose socket another thread
/// reads.
pub(crate) fn write_frame(fd: BorrowedFd<'_>, tag: u8, payload: &[u8]) -> Result<()> {
    let [a, b, c, d] = codec::header(payload.len() + 1)?;
    send_all(fd, [&[a, b, c, d, tag], payload], wait_for_room)
}

fn wait_for_room(fd: BorrowedFd<'_>) -> Result<()> {
    let mut fds = [PollFd::new(fd, PollFlags::POLLOUT)];
    poll_until(&mut fds, Deadline::Never).map(drop)
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
    use super::*;
    use crate::wire::bytes::Bytes;
    use crate::wire::codec::decode;
    use crate::wire::frame::tag;

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
            // Short frames keep the buffer; long ones are not copied into it.
            assert!(a.wbuf.capacity() <= KEEP_WBUF);
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
}
