//! Background children (pprocess's `start_persistent`, `BackgroundCallable`
//! and `BackgroundQueue`): a call that runs detached from the program that
//! started it, keeps its results, and hands them to whoever connects to its
//! filesystem address (each value to one collector, once it has read it),
//! then removes the address and exits.

use std::fmt;
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

pub(crate) mod serve;

use crate::error::{Error, Result};
use crate::parent::call::Call;
use crate::parent::delivery::Delivery;
use crate::process::spawn;
use crate::registry;
use crate::wire::codec::decode;
use crate::wire::conn::{Conn, Next};
use crate::wire::frame::{PanicReport, Refusal, remote, tag};
use crate::wire::spec::Mode;
use crate::wire::wait::{Deadline, poll_until};

/// Starts `call` in the background, reachable at `address` (a path for a
/// Unix socket, which must not exist yet).
///
/// The child is detached: it is not a child of this process, does not die
/// with it, and runs in a session of its own, with its standard input,
/// output and error on `/dev/null` (it holds none of this program's
/// terminal or pipes), so this program may exit at once.
///
/// It keeps what the call delivers (its return value, or for a
/// channel-style function the values it sends) until programs collect it
/// with [`Background::connect`] on the same address. Collectors are served
/// one at a time, and each value goes to one of them: a value counts as
/// read once a [`Background`] has returned it to its user, and each
/// collector starts at the first value that none has read. A collector
/// that goes away early (dropped, or its program gone) leaves what it has
/// not read to the next one, including values already in its socket that
/// it never returned. Once a collector has read everything and the end
/// (its iterator returned `None`, or the call's failure), the child
/// removes the address and exits; until then it stays, waiting for the
/// next collector.
///
/// Returns once the child has its arguments and runs.
///
/// # Errors
///
/// [`Error::Io`] if the address cannot be bound (it exists, or its
/// directory does not), [`Error::Spawn`], [`Error::Unregistered`],
/// [`Error::VersionSkew`] or [`Error::Codec`] if the child cannot run the
/// call.
///
/// # Examples
///
/// ```
/// use pproc::{parallel, Background};
///
/// #[parallel]
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// # fn main() -> pproc::Result<()> {
/// let address = std::env::temp_dir().join(format!("pproc-doc-{}.sock", std::process::id()));
/// pproc::start_background(&address, square::call(12))?;
/// // Later, maybe from another program:
/// let results: Vec<u64> = Background::connect(&address)?.collect::<pproc::Result<_>>()?;
/// assert_eq!(results, [144]);
/// # Ok(())
/// # }
/// ```
pub fn start_background<R, S, V, K: Delivery, F>(
    address: impl AsRef<Path>,
    call: Call<R, S, V, K, F>,
) -> Result<()> {
    let address = address.as_ref();
    let (name, args) = call.into_parts();
    let args = args.map_err(|message| Error::Codec { message })?;
    if !registry::is_registered(&name) {
        return Err(Error::Unregistered { name });
    }
    let listener = UnixListener::bind(address).map_err(Error::Io)?;
    let started = start(address, &listener, &name, &args, K::STREAMS);
    drop(listener);
    if started.is_err() {
        let _ = std::fs::remove_file(address);
    }
    started
}

fn start(
    address: &Path,
    listener: &UnixListener,
    name: &str,
    args: &[u8],
    streams: bool,
) -> Result<()> {
    let fd = OwnedFd::from(listener.try_clone().map_err(Error::Io)?);
    let spawned = spawn::spawn(
        name,
        None,
        &fd,
        registry::fingerprint(),
        Mode::Background { streams },
        &spawn::Setup::default(),
    )?;
    drop(fd);
    // Hand over the arguments on a first connection; the child answers by
    // closing it (running) or with a `FAIL` frame.
    let mut conn = Conn::new(UnixStream::connect(address).map_err(Error::Io)?.into())?;
    conn.send_bytes(tag::ARGS, args)?;
    let mut failure = None;
    loop {
        let next = conn.next(Deadline::Never, None, |tag, body| {
            (tag == tag::FAIL).then(|| decode::<Refusal>(body))
        });
        match next {
            Ok(Next::Frame(Some(refusal))) => failure = Some(refusal?),
            Ok(Next::Frame(None)) => {}
            Ok(_) | Err(Error::Disconnected) => break,
            Err(err) => return Err(err),
        }
    }
    // The first process only detaches the one that runs the call: it exits
    // at once, and is reaped here.
    let status = match nix::sys::wait::waitpid(spawned.pid, None) {
        // The program ignores `SIGCHLD`: the kernel reaped it, and only
        // the handover says how the start went.
        Err(nix::errno::Errno::ECHILD) => nix::sys::wait::WaitStatus::Exited(spawned.pid, 0),
        other => other.map_err(Error::from_errno)?,
    };
    if let Some(failure) = failure {
        return Err(failure.into());
    }
    match status {
        nix::sys::wait::WaitStatus::Exited(_, 0) => Ok(()),
        nix::sys::wait::WaitStatus::Exited(_, code) => Err(Error::Exited { code }),
        nix::sys::wait::WaitStatus::Signaled(_, signal, _) => Err(Error::Signaled {
            signal: signal as i32,
        }),
        _ => Err(Error::Disconnected),
    }
}

/// The results of a background call, collected from its address
/// (pprocess's `BackgroundQueue`): an iterator of the values it delivers,
/// as `T` (the function's `Output`). A failure of the call (a panic) is
/// yielded as a last `Err`.
///
/// It starts at the first value that no collector has read: a value is
/// this collector's once the iterator has returned it (the child is told
/// so before `next` returns). Dropped early, it leaves every value it has
/// not returned to the next collector, and the child keeps its address;
/// once the iterator has returned the last value and then the end (`None`,
/// or the call's failure), the child removes its address and exits. A
/// value that does not decode as `T` is yielded as an [`Error::Codec`] and
/// ends the iteration: it stays for the next collector too.
///
/// See [`start_background`].
///
/// # Examples
///
/// ```
/// use pproc::{parallel, Background, Channel};
///
/// #[parallel]
/// fn count(ch: Channel<u32>, n: u32) {
///     for i in 0..n {
///         ch.send(&i).unwrap();
///     }
/// }
///
/// # fn main() -> pproc::Result<()> {
/// let address = std::env::temp_dir().join(format!("pproc-doc-bg-{}.sock", std::process::id()));
/// pproc::start_background(&address, count::call(3))?;
/// let mut values = Background::<u32>::connect(&address)?;
/// assert_eq!(values.address(), address);
/// assert_eq!(values.next().transpose()?, Some(0));
/// // Reading everything, and the end, lets the child remove its address and exit.
/// assert_eq!(values.collect::<pproc::Result<Vec<_>>>()?, [1, 2]);
/// # Ok(())
/// # }
/// ```
#[must_use = "the background process runs on and keeps its values for a later collector; iterate this to collect them"]
pub struct Background<T> {
    conn: Option<Conn>,
    address: PathBuf,
    _values: PhantomData<fn() -> T>,
}

impl<T> Background<T> {
    /// Connects to the background call at `address`.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if nothing listens there (no such call, or a
    /// collector has read all its results already).
    pub fn connect(address: impl AsRef<Path>) -> Result<Self> {
        let address = address.as_ref().to_path_buf();
        let conn = Conn::new(UnixStream::connect(&address).map_err(Error::Io)?.into())?;
        Ok(Self {
            conn: Some(conn),
            address,
            _values: PhantomData,
        })
    }

    /// The address it connected to.
    #[must_use]
    pub fn address(&self) -> &Path {
        &self.address
    }
}

/// What one collector has, without waiting.
enum Collected<T> {
    /// A value, or the call's failure.
    Item(Result<T>),
    /// Nothing yet.
    Idle,
    /// Everything was received.
    Done,
}

/// What one frame gives a collector.
enum Got<T> {
    /// A value, or an error the call sent in its place.
    Value(Result<T>),
    /// The end: the call's success, or its failure.
    End(Result<()>),
    /// A frame this collector cannot read (a value that is not a `T`): it
    /// stays for the next collector.
    Bad(Error),
}

fn read_frame<T: DeserializeOwned>(tag: u8, body: &[u8]) -> Got<T> {
    match tag {
        tag::DATA => decode::<T>(body).map_or_else(Got::Bad, |value| Got::Value(Ok(value))),
        // A value the call sent as an error: yielded in its place.
        tag::ERROR => match remote(body) {
            err @ Error::Remote { .. } => Got::Value(Err(err)),
            err => Got::Bad(err),
        },
        tag::RESULT => Got::End(Ok(())),
        tag::PANIC => Got::End(Err(
            decode::<PanicReport>(body).map_or_else(|err| err, Error::from)
        )),
        tag::FAIL => Got::End(Err(
            decode::<Refusal>(body).map_or_else(|err| err, Error::from)
        )),
        other => Got::Bad(Error::codec(format_args!("unexpected frame tag {other}"))),
    }
}

impl<T: DeserializeOwned> Background<T> {
    /// The next item, waiting until `deadline`. What it hands out (a value
    /// or the end) is acknowledged to the child first: from then on it is
    /// this collector's, and not the next one's.
    fn poll(&mut self, deadline: Deadline) -> Collected<T> {
        let Some(conn) = self.conn.as_mut() else {
            return Collected::Done;
        };
        // An acknowledgement that cannot be sent means the child is gone:
        // what it sent is still handed out, then the end of the stream is
        // an error.
        match conn.next(deadline, None, read_frame::<T>) {
            Ok(Next::Frame(Got::Value(item))) => {
                let _ = conn.send_bytes(tag::ACK, &[]);
                Collected::Item(item)
            }
            Ok(Next::Frame(Got::End(end))) => {
                let _ = conn.send_bytes(tag::ACK, &[]);
                self.conn = None;
                end.map_or_else(|err| Collected::Item(Err(err)), |()| Collected::Done)
            }
            Ok(Next::Frame(Got::Bad(err))) | Err(err) => {
                self.conn = None;
                Collected::Item(Err(err))
            }
            Ok(Next::Closed | Next::Exited) => {
                self.conn = None;
                Collected::Item(Err(Error::Disconnected))
            }
            Ok(Next::Timeout) => Collected::Idle,
        }
    }

    /// Connects to the background calls at every address, and yields what
    /// they deliver as it arrives, each with the index of its address
    /// (pprocess's `PersistentQueue` with several connections). Each
    /// connection counts what it has read as one [`Background`] does.
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect), for the first address that fails.
    pub fn gather<P: AsRef<Path>>(addresses: impl IntoIterator<Item = P>) -> Result<Gathered<T>> {
        let all = addresses
            .into_iter()
            .map(Self::connect)
            .collect::<Result<Vec<_>>>()?;
        Ok(Gathered { all })
    }
}

impl<T: DeserializeOwned> Iterator for Background<T> {
    type Item = Result<T>;

    fn next(&mut self) -> Option<Result<T>> {
        loop {
            match self.poll(Deadline::Never) {
                Collected::Item(item) => return Some(item),
                Collected::Done => return None,
                Collected::Idle => {}
            }
        }
    }
}

/// What several background calls deliver, as it arrives: see
/// [`Background::gather`]. Yields `(address index, value)`.
///
/// # Examples
///
/// ```
/// use pproc::{parallel, Background};
///
/// #[parallel]
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// # fn main() -> pproc::Result<()> {
/// let dir = std::env::temp_dir();
/// let addresses = [2, 3].map(|x| dir.join(format!("pproc-doc-gather-{x}-{}.sock", std::process::id())));
/// pproc::start_background(&addresses[0], square::call(2))?;
/// pproc::start_background(&addresses[1], square::call(3))?;
/// let mut all = Vec::new();
/// for (from, value) in Background::<u64>::gather(&addresses)? {
///     all.push((from, value?)); // as they arrive; then each child exits
/// }
/// all.sort_unstable();
/// assert_eq!(all, [(0, 4), (1, 9)]);
/// # Ok(())
/// # }
/// ```
pub struct Gathered<T> {
    all: Vec<Background<T>>,
}

impl<T: DeserializeOwned> Iterator for Gathered<T> {
    type Item = (usize, Result<T>);

    fn next(&mut self) -> Option<(usize, Result<T>)> {
        loop {
            let mut live = false;
            for (i, one) in self.all.iter_mut().enumerate() {
                match one.poll(Deadline::Now) {
                    Collected::Item(item) => return Some((i, item)),
                    Collected::Idle => live = true,
                    Collected::Done => {}
                }
            }
            if !live {
                return None;
            }
            let fds: Vec<_> = self
                .all
                .iter()
                .filter_map(|one| one.conn.as_ref())
                .map(|conn| nix::poll::PollFd::new(conn.as_fd(), nix::poll::PollFlags::POLLIN))
                .collect();
            let mut fds = fds;
            if poll_until(&mut fds, Deadline::Never).is_err() {
                return None;
            }
        }
    }
}

impl<T> fmt::Debug for Gathered<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gathered")
            .field("connections", &self.all.len())
            .finish_non_exhaustive()
    }
}

impl<T> AsRawFd for Background<T> {
    /// The connection's socket, or -1 once everything was received.
    fn as_raw_fd(&self) -> RawFd {
        self.conn.as_ref().map_or(-1, Conn::raw_fd)
    }
}

impl<T> fmt::Debug for Background<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Background")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}
