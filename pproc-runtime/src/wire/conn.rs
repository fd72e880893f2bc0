//! Framing over a non-blocking Unix stream socket (the frames themselves
//! are in [`frame`](super::frame)).
//!
//! Writes never deadlock against a peer that is
//! writing too: while a write waits for room, whatever the peer sends is read
//! into the receive buffer, so both ends keep draining each other.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags};
use nix::sys::socket::{MsgFlags, recv, send};
use serde::Serialize;

use super::codec::{self, HEADER};
use super::wait::{Deadline, poll_until};
use crate::error::{Error, Result};

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
        })
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

    /// Sends one frame whose payload is `value` serialized.
    pub(crate) fn send_value<T: Serialize + ?Sized>(&mut self, tag: u8, value: &T) -> Result<()> {
        let mut frame = vec![0; HEADER + 1];
        frame[HEADER] = tag;
        codec::encode_into(value, &mut frame)?;
        self.send_frame(frame)
    }

    /// Sends one frame whose payload is already serialized.
    pub(crate) fn send_bytes(&mut self, tag: u8, payload: &[u8]) -> Result<()> {
        let mut frame = Vec::with_capacity(HEADER + 1 + payload.len());
        frame.extend_from_slice(&[0; HEADER]);
        frame.push(tag);
        frame.extend_from_slice(payload);
        self.send_frame(frame)
    }

    /// Fills in the length of a frame built as `[0; HEADER] tag payload` and
    /// writes it whole.
    fn send_frame(&mut self, mut frame: Vec<u8>) -> Result<()> {
        let header = codec::header(frame.len() - HEADER)?;
        frame[..HEADER].copy_from_slice(&header);
        self.write_all(&frame)
    }

    /// Sends frames that are already whole (headers included), in one
    /// write.
    pub(crate) fn send_framed(&mut self, frames: &[u8]) -> Result<()> {
        self.write_all(frames)
    }

    fn write_all(&mut self, data: &[u8]) -> Result<()> {
        let fd = Arc::clone(&self.fd);
        send_all(fd.as_fd(), data, |fd| {
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
            // that claims a gigabyte costs what its peer really sends.
            let ahead = (self.rbuf.len() - self.rpos).clamp(64 * 1024, 4 << 20);
            let want = self.missing().clamp(64 * 1024, ahead);
            let start = self.rbuf.len();
            self.rbuf.resize(start + want, 0);
            let got = recv(
                self.fd.as_raw_fd(),
                &mut self.rbuf[start..],
                MsgFlags::empty(),
            );
            match got {
                Ok(0) => {
                    self.rbuf.truncate(start);
                    self.eof = true;
                    return Ok(total);
                }
                Ok(n) => {
                    self.rbuf.truncate(start + n);
                    total += n;
                    if n < want {
                        return Ok(total);
                    }
                }
                Err(err) => {
                    self.rbuf.truncate(start);
                    match err {
                        Errno::EINTR => {}
                        Errno::EAGAIN => return Ok(total),
                        Errno::ECONNRESET => {
                            self.eof = true;
                            return Ok(total);
                        }
                        err => return Err(err.into()),
                    }
                }
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

/// Writes `data` whole to the non-blocking socket `fd`, calling `wait`
/// whenever it has no room.
fn send_all(
    fd: BorrowedFd<'_>,
    mut data: &[u8],
    mut wait: impl FnMut(BorrowedFd<'_>) -> Result<()>,
) -> Result<()> {
    while !data.is_empty() {
        match send(fd.as_raw_fd(), data, MsgFlags::MSG_NOSIGNAL) {
            Ok(n) => data = &data[n..],
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
    send_all(fd, &[a, b, c, d, tag], wait_for_room)?;
    send_all(fd, payload, wait_for_room)
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
