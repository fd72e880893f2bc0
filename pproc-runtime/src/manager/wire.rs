//! The manager's transport: addresses, blocking streams (TCP or Unix),
//! and the challenge-response handshake. Frames are the one codec's
//! ([`crate::wire::codec`]).
//!
//! The handshake reads and writes fixed-size messages only, so nothing
//! larger than a challenge is allocated before a peer has proved it knows
//! the key; frames, whose size the peer chooses, come after.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::error::{Error, Result};

/// Where a manager listens.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Address {
    /// A TCP address: reachable from other machines, as far as the network
    /// lets it.
    Tcp(SocketAddr),
    /// A Unix socket at a path in the filesystem.
    Unix(PathBuf),
    /// A name in Linux's abstract socket namespace: this machine only, no
    /// file to clean up. [`Manager::start`](super::Manager::start) uses one.
    Local(String),
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(addr) => write!(f, "tcp:{addr}"),
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
            Self::Local(name) => write!(f, "local:{name}"),
        }
    }
}

impl Address {
    /// The first TCP address that `addr` resolves to.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if it resolves to none.
    pub fn tcp(addr: impl ToSocketAddrs) -> Result<Self> {
        addr.to_socket_addrs()
            .map_err(Error::Io)?
            .next()
            .map(Self::Tcp)
            .ok_or_else(|| {
                Error::Io(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "no address to bind or reach",
                ))
            })
    }
}

/// A connected stream, TCP or Unix.
#[derive(Debug)]
pub(crate) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    pub(crate) fn connect(address: &Address) -> io::Result<Self> {
        match address {
            Address::Tcp(addr) => {
                let stream = TcpStream::connect(addr)?;
                // Small requests and replies: do not wait to coalesce them.
                stream.set_nodelay(true)?;
                Ok(Self::Tcp(stream))
            }
            Address::Unix(path) => UnixStream::connect(path).map(Self::Unix),
            Address::Local(name) => {
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
                UnixStream::connect_addr(&addr).map(Self::Unix)
            }
        }
    }

    pub(crate) fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Self::Tcp(s) => s.set_read_timeout(timeout),
            Self::Unix(s) => s.set_read_timeout(timeout),
        }
    }

    pub(crate) fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        match self {
            Self::Tcp(s) => s.set_nonblocking(nonblocking),
            Self::Unix(s) => s.set_nonblocking(nonblocking),
        }
    }

    pub(crate) fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Self::Tcp(s) => s.set_write_timeout(timeout),
            Self::Unix(s) => s.set_write_timeout(timeout),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.read(buf),
            Self::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.write(buf),
            Self::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Tcp(s) => s.flush(),
            Self::Unix(s) => s.flush(),
        }
    }
}

impl AsFd for Stream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Self::Tcp(s) => s.as_fd(),
            Self::Unix(s) => s.as_fd(),
        }
    }
}

/// A listening socket, TCP or Unix.
#[derive(Debug)]
pub(crate) enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    pub(crate) fn bind(address: &Address) -> io::Result<Self> {
        match address {
            Address::Tcp(addr) => TcpListener::bind(addr).map(Self::Tcp),
            Address::Unix(path) => UnixListener::bind(path).map(Self::Unix),
            Address::Local(name) => {
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
                UnixListener::bind_addr(&addr).map(Self::Unix)
            }
        }
    }

    /// The address it is bound to (a TCP port of 0 becomes the real one).
    pub(crate) fn address(&self, asked: &Address) -> io::Result<Address> {
        match self {
            Self::Tcp(l) => l.local_addr().map(Address::Tcp),
            Self::Unix(_) => Ok(asked.clone()),
        }
    }

    pub(crate) fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        match self {
            Self::Tcp(l) => l.set_nonblocking(nonblocking),
            Self::Unix(l) => l.set_nonblocking(nonblocking),
        }
    }

    pub(crate) fn accept(&self) -> io::Result<Stream> {
        match self {
            Self::Tcp(l) => {
                let (stream, _) = l.accept()?;
                stream.set_nodelay(true)?;
                Ok(Stream::Tcp(stream))
            }
            Self::Unix(l) => l.accept().map(|(s, _)| Stream::Unix(s)),
        }
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Self::Tcp(l) => l.as_fd(),
            Self::Unix(l) => l.as_fd(),
        }
    }
}

/// Opens every handshake: identifies the protocol and its version.
const MAGIC: &[u8; 8] = b"PPROCMGR";
const VERSION: u8 = 1;
pub(crate) const CHALLENGE: usize = 32;
const TAG: usize = 32;
/// The server's greeting's length.
const HELLO: usize = MAGIC.len() + 1 + CHALLENGE;
/// The client's answer's length: its tag and its own challenge.
pub(crate) const ANSWER: usize = TAG + CHALLENGE;

/// 32 random bytes from the kernel.
pub(crate) fn random() -> io::Result<[u8; CHALLENGE]> {
    let mut bytes = [0; CHALLENGE];
    let mut filled = 0;
    while filled < bytes.len() {
        // SAFETY: getrandom writes at most the given length into the buffer.
        let n = unsafe {
            libc::getrandom(bytes[filled..].as_mut_ptr().cast(), bytes.len() - filled, 0)
        };
        if let Ok(n) = usize::try_from(n) {
            filled += n;
        } else {
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }
    Ok(bytes)
}

fn mac(key: &[u8], role: &[u8], challenge: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(role);
    mac.update(challenge);
    mac
}

/// The server's greeting: the protocol, its version and a challenge.
pub(crate) fn hello(challenge: &[u8; CHALLENGE]) -> [u8; HELLO] {
    let mut hello = [0; HELLO];
    hello[..8].copy_from_slice(MAGIC);
    hello[8] = VERSION;
    hello[9..].copy_from_slice(challenge);
    hello
}

/// Checks a client's answer to `challenge` (its tag, then its own
/// challenge), comparing in constant time. If it knows the key: the reply
/// that accepts it and proves the server knows it too.
pub(crate) fn check_answer(key: &[u8], challenge: &[u8], answer: &[u8]) -> Option<Vec<u8>> {
    let (tag, theirs) = answer.split_at(TAG);
    mac(key, b"pproc client", challenge)
        .verify_slice(tag)
        .ok()?;
    let proof = mac(key, b"pproc server", theirs).finalize().into_bytes();
    let mut reply = Vec::with_capacity(1 + TAG);
    reply.push(1);
    reply.extend_from_slice(&proof);
    Some(reply)
}

/// The reply to a client that does not know the key.
pub(crate) fn refusal() -> Vec<u8> {
    vec![0]
}

/// The client's side of the handshake.
pub(crate) fn connect_handshake(stream: &mut Stream, key: &[u8], address: &Address) -> Result<()> {
    let auth = |message: String| Error::Authentication { message };
    let mut hello = [0; HELLO];
    stream.read_exact(&mut hello).map_err(Error::Io)?;
    if &hello[..8] != MAGIC {
        return Err(auth(format!("{address} is not a pproc manager")));
    }
    if hello[8] != VERSION {
        return Err(auth(format!(
            "the manager at {address} speaks version {} of the protocol, this program {VERSION}",
            hello[8]
        )));
    }
    let ours = random().map_err(Error::Io)?;
    let tag = mac(key, b"pproc client", &hello[9..])
        .finalize()
        .into_bytes();
    let mut answer = Vec::with_capacity(TAG + CHALLENGE);
    answer.extend_from_slice(&tag);
    answer.extend_from_slice(&ours);
    stream.write_all(&answer).map_err(Error::Io)?;
    let mut status = [0; 1];
    match stream.read_exact(&mut status) {
        Ok(()) if status[0] == 1 => {}
        Ok(()) => return Err(auth(format!("the manager at {address} refused the key"))),
        // Closed without a verdict: a manager whose handshake table is
        // full of others' connections lets the oldest go.
        Err(err) => {
            return Err(Error::Io(io::Error::new(
                err.kind(),
                format!(
                    "the manager at {address} closed the connection during the handshake (busy, or the answer came too late): {err}"
                ),
            )));
        }
    }
    let mut proof = [0; TAG];
    stream.read_exact(&mut proof).map_err(Error::Io)?;
    if mac(key, b"pproc server", &ours)
        .verify_slice(&proof)
        .is_err()
    {
        return Err(auth(format!(
            "the manager at {address} does not know the key: it may be an impostor"
        )));
    }
    Ok(())
}
