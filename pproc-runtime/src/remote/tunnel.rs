//! Connections from a host's children to the managers their parent
//! reaches, carried over the host's link: a manager's proxy that crosses
//! to another host works there as it does here.
//!
//! The agent listens on a socket of its own in the abstract namespace and
//! names it to its children in [`ENV`]. A client there connects to it
//! instead of the manager's address and says the address first; the agent
//! opens a tunnel over the link (`OPEN`), the parent connects to the
//! address, and both relay the connection's bytes (`BYTES`, `SHUT`), each
//! way within a window as a child's frames are. The manager's handshake
//! runs end to end, with its key: the tunnel adds no trust. The parent
//! connects only to the managers it reaches itself (it started them or
//! connected to them), and the agent takes connections only from its own
//! user.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::sync::OnceLock;

use nix::errno::Errno;
use nix::poll::PollFlags;
use nix::sys::socket::{Shutdown, shutdown};

use super::outgoing::{Flow, Outgoing};
pub(crate) use super::protocol::TUNNEL;
use super::protocol::tag;
use crate::wire::codec;

/// The environment variable that names the agent's socket to its children.
pub(crate) const ENV: &str = "PPROC_TUNNEL";

/// The longest address a client may say.
const MAX_PREAMBLE: usize = 4096;

/// The most bytes read from a socket at once.
const CHUNK: usize = 64 * 1024;

/// How the parent reaches what a tunnel names, given the address as the
/// client said it (its encoding is the manager's): `None` if it does not
/// reach it for a child. The manager's client sets it when it first
/// reaches a manager; until then every tunnel is refused.
pub(crate) type Opener = fn(&[u8]) -> Option<io::Result<OwnedFd>>;

static OPENER: OnceLock<Opener> = OnceLock::new();

/// Sets how the parent reaches what a tunnel names (see [`Opener`]).
pub(crate) fn set_opener(opener: Opener) {
    let _ = OPENER.set(opener);
}

/// The parent's connection for a tunnel to `address`, made non-blocking;
/// an error if it does not reach it.
pub(super) fn open(address: &[u8]) -> io::Result<OwnedFd> {
    let fd = OPENER
        .get()
        .and_then(|open| open(address))
        .unwrap_or_else(|| Err(io::Error::other("not a manager this process reaches")))?;
    nonblocking(&fd)?;
    Ok(fd)
}

/// A client's connection through the agent's socket `name` to what
/// `address` (encoded by the client's layer) names: the address goes
/// first, then the client's protocol.
pub(crate) fn connect(name: &std::ffi::OsStr, address: &[u8]) -> io::Result<UnixStream> {
    let at = SocketAddr::from_abstract_name(name.as_encoded_bytes())?;
    let mut stream = UnixStream::connect_addr(&at)?;
    codec::write_frame(&mut stream, address).map_err(io::Error::other)?;
    Ok(stream)
}

/// The agent's socket for its children's tunnels, and its name.
pub(super) fn listen() -> io::Result<(UnixListener, String)> {
    let nonce: u64 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.as_secs() ^ u64::from(t.subsec_nanos()) << 32);
    let name = format!("pproc-tunnel-{}-{nonce:x}", std::process::id());
    let listener = UnixListener::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes())?)?;
    listener.set_nonblocking(true)?;
    Ok((listener, name))
}

/// The next connection to the agent's socket from a process of the
/// agent's own user; `None` when none waits.
pub(super) fn accept(listener: &UnixListener) -> Option<Pipe> {
    loop {
        let (stream, _) = listener.accept().ok()?;
        let own = nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials)
            .is_ok_and(|peer| peer.uid() == nix::unistd::getuid().as_raw());
        if own && stream.set_nonblocking(true).is_ok() {
            let mut pipe = Pipe::new(Some(stream.into()));
            pipe.preamble = Some(Vec::new());
            return Some(pipe);
        }
    }
}

/// Makes `fd` non-blocking.
pub(crate) fn nonblocking(fd: &OwnedFd) -> io::Result<()> {
    let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL)?;
    let flags = nix::fcntl::OFlag::from_bits_retain(flags) | nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(flags))?;
    Ok(())
}

/// One tunnelled connection at either end: its socket (none while the
/// parent connects), what waits to be written to it, and its flow.
#[derive(Debug)]
pub(super) struct Pipe {
    fd: Option<OwnedFd>,
    out: Outgoing,
    flow: Flow,
    /// At the agent, until the client has said its address: what it said
    /// so far.
    preamble: Option<Vec<u8>>,
    /// Nothing more is read from the socket; `SHUT` is sent.
    read_done: bool,
    /// The other end has nothing more to send: the socket's write side is
    /// shut once `out` is written.
    shut: bool,
    write_done: bool,
}

impl Pipe {
    pub(super) fn new(fd: Option<OwnedFd>) -> Self {
        Self {
            fd,
            out: Outgoing::default(),
            flow: Flow::default(),
            preamble: None,
            read_done: false,
            shut: false,
            write_done: false,
        }
    }

    /// One way only, into `fd` (the parent's end of a captured output).
    pub(super) fn sink(fd: OwnedFd) -> Self {
        let mut pipe = Self::new(Some(fd));
        pipe.read_done = true;
        pipe
    }

    /// One way only, out of `fd` (a child's captured output, at its
    /// agent).
    pub(super) fn source(fd: OwnedFd) -> Self {
        let mut pipe = Self::new(Some(fd));
        pipe.write_done = true;
        pipe
    }

    /// The parent reached the manager.
    pub(super) fn connected(&mut self, fd: OwnedFd) {
        self.fd = Some(fd);
    }

    /// The parent could not reach the manager: says so, and is done.
    pub(super) fn failed(&mut self, id: u32, link: &mut Outgoing) {
        self.fd = None;
        self.end_reading(id, link);
        self.write_done = true;
    }

    pub(super) fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.fd.as_ref().map(AsFd::as_fd)
    }

    /// What to poll its socket for.
    pub(super) fn events(&self) -> PollFlags {
        match self.fd {
            Some(_) => self.flow.events(self.read_done, &self.out),
            None => PollFlags::empty(),
        }
    }

    /// Reads what the socket holds and sends it over `link`: at the agent,
    /// the client's address first, as an `OPEN`.
    pub(super) fn read(&mut self, id: u32, link: &mut Outgoing) {
        let Some(fd) = &self.fd else {
            return;
        };
        let mut buf = vec![0; CHUNK];
        let n = match nix::unistd::read(fd, &mut buf) {
            Ok(0) => return self.end_reading(id, link),
            Ok(n) => n,
            Err(Errno::EAGAIN | Errno::EINTR) => return,
            Err(_) => return self.end_reading(id, link),
        };
        let mut data = &buf[..n];
        if let Some(said) = &mut self.preamble {
            said.extend_from_slice(data);
            match codec::split_frame(said, 0, MAX_PREAMBLE) {
                Ok(Some(address)) => {
                    let len = codec::HEADER + address.len();
                    let address = address.to_vec();
                    let rest = said.split_off(len);
                    self.preamble = None;
                    let opened = link.frame(tag::OPEN, &[&id.to_le_bytes(), &address]);
                    if opened.is_err() {
                        return self.end_reading(id, link);
                    }
                    buf = rest;
                    data = &buf;
                }
                Ok(None) => return,
                // Not an address: the client is not one of pproc's.
                Err(_) => {
                    self.fd = None;
                    self.read_done = true;
                    self.write_done = true;
                    return;
                }
            }
        }
        if !data.is_empty() {
            self.flow.sent(data.len());
            let _ = link.frame(tag::BYTES, &[&id.to_le_bytes(), data]);
        }
    }

    fn end_reading(&mut self, id: u32, link: &mut Outgoing) {
        if !self.read_done {
            self.read_done = true;
            if self.preamble.is_none() {
                let _ = link.frame(tag::SHUT, &[&id.to_le_bytes()]);
            } else {
                // The client left before it said where to: nothing was
                // opened.
                self.write_done = true;
            }
        }
    }

    /// Bytes from the other end, for the socket.
    pub(super) fn bytes(&mut self, data: &[u8]) {
        if !self.write_done {
            self.out.raw(data);
        }
    }

    /// The other end sends nothing more.
    pub(super) fn shut(&mut self) {
        self.shut = true;
    }

    /// The other end wrote `bytes` more of what this end sent.
    pub(super) fn credited(&mut self, bytes: u64) {
        self.flow.credited(bytes);
    }

    /// Writes what waits to the socket, as far as it takes it now, and
    /// shuts its write side once the other end is done.
    pub(super) fn deliver(&mut self, id: u32, link: &mut Outgoing) {
        let Some(fd) = &self.fd else {
            return;
        };
        if self.write_done {
            return;
        }
        if self
            .flow
            .deliver(id, &mut self.out, fd.as_fd(), link)
            .is_err()
        {
            self.write_done = true;
        } else if self.shut && self.out.is_empty() {
            if shutdown(std::os::fd::AsRawFd::as_raw_fd(fd), Shutdown::Write).is_err() {
                // A pipe: its reader sees the end once it is closed.
                self.fd = None;
            }
            self.write_done = true;
        }
    }

    /// Both ways are over: the connection can go.
    pub(super) fn is_done(&self) -> bool {
        self.read_done && self.write_done
    }
}
