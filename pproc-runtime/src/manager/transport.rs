//! The manager's transport: addresses, and blocking streams and
//! listeners over TCP or Unix sockets. Frames are the one codec's
//! ([`crate::wire::codec`]); the handshake that opens each connection is
//! [`auth`](super::auth)'s.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Where a manager listens.
///
/// # Examples
///
/// ```
/// use pproc::manager::Address;
///
/// # fn main() -> pproc::Result<()> {
/// let tcp = Address::tcp("127.0.0.1:7878")?;
/// assert_eq!(tcp.to_string(), "tcp:127.0.0.1:7878");
/// let manager = pproc::Manager::start()?;
/// assert!(matches!(manager.address(), Address::Local(_)));
/// // An address and the key reach the manager, from here or a child.
/// let client = pproc::Manager::connect_to(manager.address().clone(), manager.key())?;
/// assert_eq!(client.value(&5_u8)?.get()?, 5);
/// # Ok(())
/// # }
/// ```
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

/// How long a child on another host tries a manager's TCP address from
/// there before it goes through its parent.
const TRY_HERE: Duration = Duration::from_secs(3);

/// The managers this process has reached, their keys proved: the ones a
/// child on another host may reach through its link (see
/// [`tunnel`](crate::remote::tunnel)).
static REACHED: std::sync::Mutex<Vec<Address>> = std::sync::Mutex::new(Vec::new());

/// This process has reached the manager at `address`, its key proved:
/// from now on a child on another host may reach it too.
pub(crate) fn reached(address: &Address) {
    let mut reached = crate::lock::lock(&REACHED);
    if !reached.contains(address) {
        reached.push(address.clone());
    }
    crate::remote::tunnel::set_opener(Stream::for_tunnel);
}

/// How long a parent tries to reach a manager for a child's tunnel.
const TUNNEL_CONNECT: Duration = Duration::from_secs(10);

/// A connected stream, TCP or Unix.
#[derive(Debug)]
pub(crate) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    /// A connection to the manager at `address`. In a child on another
    /// host, one that cannot be made there (and any to a loopback address,
    /// which is its parent's) goes through the link of the host's agent to
    /// where the parent reaches it (see [`tunnel`](crate::remote::tunnel)).
    pub(crate) fn connect(address: &Address) -> io::Result<Self> {
        let Some(agent) = std::env::var_os(crate::remote::tunnel::ENV) else {
            return Self::direct(address, None);
        };
        let loopback = matches!(address, Address::Tcp(addr) if addr.ip().is_loopback());
        if !loopback && let Ok(stream) = Self::direct(address, Some(TRY_HERE)) {
            return Ok(stream);
        }
        let said = crate::wire::codec::encode(address).map_err(io::Error::other)?;
        crate::remote::tunnel::connect(&agent, &said).map(Self::Unix)
    }

    /// The parent's end of a tunnel to a manager for a child on another
    /// host ([`tunnel::Opener`](crate::remote::tunnel::Opener)): the
    /// address as the child's client encoded it, if this process reaches
    /// that manager itself.
    pub(crate) fn for_tunnel(said: &[u8]) -> Option<io::Result<std::os::fd::OwnedFd>> {
        let address = crate::wire::codec::decode::<Address>(said).ok()?;
        if !crate::lock::lock(&REACHED).contains(&address) {
            return None;
        }
        Some(
            Self::direct(&address, Some(TUNNEL_CONNECT)).map(|stream| match stream {
                Self::Tcp(stream) => stream.into(),
                Self::Unix(stream) => stream.into(),
            }),
        )
    }

    /// A connection made from here, trying a TCP address for at most
    /// `timeout`.
    fn direct(address: &Address, timeout: Option<Duration>) -> io::Result<Self> {
        match address {
            Address::Tcp(addr) => {
                let stream = match timeout {
                    Some(timeout) => TcpStream::connect_timeout(addr, timeout)?,
                    None => TcpStream::connect(addr)?,
                };
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
