//! Frames waiting to be written to a non-blocking socket, for a relay that
//! must never block on one peer while others wait.

use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;
use nix::poll::PollFlags;
use nix::sys::socket::{MsgFlags, send};

use super::protocol::{WINDOW, credit_body, frame_head, tag};
use crate::error::{Error, Result};
use crate::wire::codec;
use crate::wire::conn::Conn;

/// Bytes not written yet to one socket; written as far as it takes them.
#[derive(Debug, Default)]
pub(super) struct Outgoing {
    buf: Vec<u8>,
    /// `buf[head..]` is not written yet.
    head: usize,
}

/// One child's traffic over a link as one end counts it: what it sent
/// that the other end has not yet written to the child's socket, and what
/// it wrote (or dropped) of what it received that it has not yet said.
/// Both count a frame as its header, tag and payload.
#[derive(Debug, Default)]
pub(super) struct Flow {
    in_flight: usize,
    owed: usize,
}

impl Flow {
    /// Whether this end may read more of the child's socket to send on:
    /// not while a [`WINDOW`] of it is in flight.
    pub(super) fn may_read(&self) -> bool {
        self.in_flight < WINDOW
    }

    /// This end sent `bytes` more.
    pub(super) fn sent(&mut self, bytes: usize) {
        self.in_flight += bytes;
    }

    /// What to poll a child's socket for: to read while it has not ended
    /// (`eof`) and the window has room, to write while `out` holds bytes.
    pub(super) fn events(&self, eof: bool, out: &Outgoing) -> PollFlags {
        let mut events = PollFlags::empty();
        if !eof && self.may_read() {
            events |= PollFlags::POLLIN;
        }
        if !out.is_empty() {
            events |= PollFlags::POLLOUT;
        }
        events
    }

    /// The other end wrote `bytes` more.
    pub(super) fn credited(&mut self, bytes: u64) {
        let bytes = usize::try_from(bytes).unwrap_or(usize::MAX);
        self.in_flight = self.in_flight.saturating_sub(bytes);
    }

    /// Writes what `out` holds for the child to its socket, `fd`, as far
    /// as it takes it now; then tells the other end through `link` once a
    /// quarter window was written. If the socket is gone, what waits is
    /// dropped, and counts as written.
    pub(super) fn deliver(
        &mut self,
        id: u32,
        out: &mut Outgoing,
        fd: BorrowedFd<'_>,
        link: &mut Outgoing,
    ) -> Result<()> {
        let before = out.pending();
        let written = out.write(fd);
        if written.is_err() {
            *out = Outgoing::default();
        }
        self.owed += before - out.pending();
        if self.owed >= WINDOW / 4 {
            link.frame(tag::CREDIT, &[&credit_body(id, self.owed as u64)])?;
            self.owed = 0;
        }
        written
    }
}

/// Reads what child `id`'s socket holds and queues each frame in `out`
/// as a `FRAME` of the link, counting it in `flow`; `true` once nothing
/// more can be read from it (its end closed, the socket failed, or its
/// stream lost its framing).
pub(super) fn wrap_frames(conn: &mut Conn, id: u32, out: &mut Outgoing, flow: &mut Flow) -> bool {
    let failed = conn.fill().is_err();
    let broken = loop {
        match conn.with_frame(|frame_tag, body| {
            flow.sent(codec::HEADER + 1 + body.len());
            let _ = out.frame(tag::FRAME, &[&frame_head(id, frame_tag), body]);
        }) {
            Ok(Some(())) => {}
            Ok(None) => break false,
            Err(_) => break true,
        }
    };
    failed || broken || conn.is_eof()
}

impl Outgoing {
    /// Queues a frame of `tag` whose body is `parts`, one after the other.
    pub(super) fn frame(&mut self, tag: u8, parts: &[&[u8]]) -> Result<()> {
        let len: usize = parts.iter().map(|part| part.len()).sum();
        if self.head == self.buf.len() {
            self.buf.clear();
            self.head = 0;
        }
        self.buf.extend_from_slice(&codec::header(len + 1)?);
        self.buf.push(tag);
        for part in parts {
            self.buf.extend_from_slice(part);
        }
        Ok(())
    }

    /// Queues bytes that are already framed.
    pub(super) fn raw(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    pub(super) fn is_empty(&self) -> bool {
        self.head == self.buf.len()
    }

    /// How many bytes wait.
    pub(super) fn pending(&self) -> usize {
        self.buf.len() - self.head
    }

    /// Writes what the socket takes now, without blocking.
    ///
    /// # Errors
    ///
    /// [`Error::Disconnected`] once the peer is gone.
    pub(super) fn write(&mut self, fd: BorrowedFd<'_>) -> Result<()> {
        while self.head < self.buf.len() {
            match send(
                fd.as_raw_fd(),
                &self.buf[self.head..],
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
            ) {
                Ok(n) => self.head += n,
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => break,
                // A pipe (an agent's standard output): written plainly,
                // where `SIGPIPE` is ignored.
                Err(Errno::ENOTSOCK) => match nix::unistd::write(fd, &self.buf[self.head..]) {
                    Ok(n) => self.head += n,
                    Err(Errno::EINTR) => {}
                    Err(Errno::EAGAIN) => break,
                    Err(Errno::EPIPE) => return Err(Error::Disconnected),
                    Err(err) => return Err(Error::from_errno(err)),
                },
                Err(Errno::EPIPE | Errno::ECONNRESET) => return Err(Error::Disconnected),
                Err(err) => return Err(Error::from_errno(err)),
            }
        }
        if self.head == self.buf.len() {
            self.buf.clear();
            self.head = 0;
        } else if self.head > (1 << 20) && self.head > self.buf.len() / 2 {
            self.buf.drain(..self.head);
            self.head = 0;
        }
        Ok(())
    }
}
