//! Background children (pprocess's `start_persistent`, `BackgroundCallable`
//! and `BackgroundQueue`): a call that runs detached from the program that
//! started it, keeps its results, and hands them to whoever connects to its
//! filesystem address (each value to one collector, once it has read it),
//! then removes the address and exits.

use std::fmt;
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, PoisonError};

use serde::de::DeserializeOwned;

use crate::call::{Call, Delivery};
use crate::child::{self, Context, EXIT_PROTOCOL, EXIT_UNREGISTERED, EXIT_VERSION_SKEW, Failure};
use crate::conn::{self, Conn, Deadline, Step, Wake, decode, tag};
use crate::error::{Error, Result};
use crate::{codec, registry, spawn};

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
        spawn::Mode::Background { streams },
        &spawn::Setup::default(),
    )?;
    drop(fd);
    // Hand over the arguments on a first connection; the child answers by
    // closing it (running) or with a `FAIL` frame.
    let mut conn = Conn::new(UnixStream::connect(address).map_err(Error::Io)?.into())?;
    conn.send_bytes(tag::ARGS, args)?;
    let mut failure = None;
    loop {
        let step = conn.recv_data(
            Deadline::Never,
            None,
            |_| Ok(()),
            |tag, body| {
                if tag == tag::FAIL {
                    failure = Some(decode::<Failure>(body)?);
                }
                Ok(())
            },
        );
        match step {
            Ok(Step::Data(())) => {}
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
        other => other?,
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

/// Collector to background child: one frame it has handed to its user
/// (a value, an error the call sent in its place, or the end). The body is
/// empty. Distinct from the tags of [`conn::tag`].
const ACK: u8 = 8;

/// The results of a background call, as its child keeps them, and how far
/// collectors have read them.
#[derive(Default)]
struct Kept {
    /// Frames for collectors: `DATA` (or `ERROR`) values, then one end
    /// frame.
    frames: Vec<(u8, Arc<[u8]>)>,
    ended: bool,
    /// Frames that collectors have acknowledged: the next collector starts
    /// after them.
    acked: usize,
    /// Frames written, or being written, to the current collector.
    offered: usize,
    /// The current collector went away, or sent what it should not.
    left: bool,
}

impl Kept {
    /// Whether a collector has read everything, the end frame included.
    fn done(&self) -> bool {
        self.ended && self.acked == self.frames.len()
    }
}

type Shared = Arc<(Mutex<Kept>, Condvar)>;

/// The background child's side: runs in the re-executed program, from the
/// dispatcher, with the listening socket at `fd`. Returns the exit status.
pub(crate) fn serve(fd: RawFd, fingerprint: u64, name: &str, streams: bool) -> i32 {
    // SAFETY: the parent placed the listening socket at this descriptor
    // with a posix_spawn dup2 action; nothing else owns it.
    let listener = UnixListener::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let cloexec = nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC);
    if nix::fcntl::fcntl(&listener, cloexec).is_err() {
        return EXIT_PROTOCOL;
    }
    // SAFETY: setting a signal to SIG_IGN installs no handler code.
    unsafe {
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigIgn,
        );
    }
    let Ok((stream, _)) = listener.accept() else {
        return EXIT_PROTOCOL;
    };
    let Ok(mut conn) = Conn::new(stream.into()) else {
        return EXIT_PROTOCOL;
    };
    if registry::fingerprint() != fingerprint {
        let failure = Failure::VersionSkew {
            parent: fingerprint,
            child: registry::fingerprint(),
        };
        let _ = conn.send_value(tag::FAIL, &failure);
        return EXIT_VERSION_SKEW;
    }
    let Some(entry) = registry::lookup(name) else {
        let failure = Failure::Unregistered {
            name: name.to_owned(),
        };
        let _ = conn.send_value(tag::FAIL, &failure);
        return EXIT_UNREGISTERED;
    };
    let Some(args) = child::first_frame(&mut conn) else {
        return EXIT_PROTOCOL;
    };
    let Ok(address) = listener
        .local_addr()
        .map(|a| a.as_pathname().map(Path::to_path_buf))
    else {
        return EXIT_PROTOCOL;
    };
    // Detach: this process exits at once (its parent reaps it), the fork
    // lives on in a session of its own, a child of nobody here. We are
    // still single-threaded, before `main`.
    // SAFETY: no other thread exists yet in this process.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Parent { .. }) => return 0,
        Ok(nix::unistd::ForkResult::Child) => {}
        Err(_) => return EXIT_PROTOCOL,
    }
    drop(conn); // the parent sees the handover end: the call runs
    let _ = nix::unistd::setsid();
    // Hold none of the starter's terminal or pipes: a shell pipeline or a
    // `Command::output` waiting on them would wait for this child too.
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..=2 {
            // SAFETY: dup2 onto the standard descriptors, which this
            // process owns; `null` stays open until the calls return.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
    run(&listener, entry, args, streams);
    if let Some(address) = address {
        let _ = std::fs::remove_file(address);
    }
    0
}

/// Runs the call, keeping what it delivers, and serves collectors until one
/// has read it all.
fn run(listener: &UnixListener, entry: &registry::Entry, args: Vec<u8>, streams: bool) {
    let Ok((ours, theirs)) = conn::socketpair() else {
        return;
    };
    let (Ok(ours), Ok(theirs)) = (Conn::new(ours), Conn::new(theirs)) else {
        return;
    };
    let kept: Shared = Arc::default();
    let reader = {
        let kept = Arc::clone(&kept);
        std::thread::spawn(move || keep(ours, &kept, streams))
    };
    let server = {
        let kept = Arc::clone(&kept);
        let listener = listener.try_clone();
        std::thread::spawn(move || {
            if let Ok(listener) = listener {
                hand_out(&listener, &kept);
            }
        })
    };
    let conn = Arc::new(Mutex::new(theirs));
    if child::CHILD_CONN.set(Arc::clone(&conn)).is_ok() {
        child::install_panic_hook();
    }
    entry.run(Context::new(args, conn));
    let _ = reader.join();
    let _ = server.join();
}

/// Reads what the call sends into `kept`: its values (or its result, as a
/// value), then an end frame.
fn keep(mut conn: Conn, kept: &Shared, streams: bool) {
    let (lock, ready) = &**kept;
    let push = |tag: u8, body: Vec<u8>, end: bool| {
        let mut kept = lock.lock().unwrap_or_else(PoisonError::into_inner);
        kept.frames.push((tag, body.into()));
        kept.ended |= end;
        ready.notify_all();
    };
    let end_without_result = || {
        // The stream ended without an end frame: report it as an exit
        // without a result.
        let failure = Failure::Codec {
            message: "the background call ended without a result".into(),
        };
        push(tag::FAIL, conn::encode(&failure).unwrap_or_default(), true);
    };
    loop {
        // Whole frames first; the end frame ends the call (its channel may
        // stay open: the panic hook keeps a copy).
        loop {
            let frame = match conn.with_frame(|tag, body| (tag, body.to_vec())) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(_) => return end_without_result(),
            };
            match frame {
                (tag::DATA, body) if streams => push(tag::DATA, body, false),
                (tag::ERROR, body) if streams => push(tag::ERROR, body, false),
                (tag::DATA | tag::ERROR, _) => {}
                (tag::RESULT, body) => {
                    if !streams {
                        push(tag::DATA, body, false);
                    }
                    push(tag::RESULT, conn::encode(&()).unwrap_or_default(), true);
                    return;
                }
                (tag, body) => return push(tag, body, true),
            }
        }
        if conn.is_eof() {
            return end_without_result();
        }
        let waited = conn.wait(None, Deadline::Never).and_then(|_| conn.fill());
        if waited.is_err() {
            return end_without_result();
        }
    }
}

/// Serves collectors, one at a time, each from the first frame that no
/// collector has acknowledged, until one has acknowledged the end frame.
fn hand_out(listener: &UnixListener, kept: &Shared) {
    loop {
        let Ok((stream, _)) = listener.accept() else {
            continue;
        };
        if serve_collector(&stream, kept) {
            return;
        }
    }
}

/// Serves one collector: writes it the frames it lacks as they come, while
/// a thread of its own reads its acknowledgements. Returns whether it
/// acknowledged the end frame.
fn serve_collector(stream: &UnixStream, kept: &Shared) -> bool {
    let (lock, _) = &**kept;
    {
        let mut kept = lock.lock().unwrap_or_else(PoisonError::into_inner);
        kept.offered = kept.acked;
        kept.left = false;
    }
    // Two descriptors for the one socket: the reader's `Conn` buffers
    // what it reads, and the writer must read nothing.
    let acks = stream
        .try_clone()
        .map_err(Error::Io)
        .and_then(|ours| Conn::new(ours.into()));
    let Ok(acks) = acks else {
        return false;
    };
    let reader = {
        let kept = Arc::clone(kept);
        std::thread::Builder::new()
            .name("pproc-background-acks".into())
            .spawn(move || read_acks(acks, &kept))
    };
    let Ok(reader) = reader else {
        return false;
    };
    write_frames(stream, kept);
    // Ends the reader's wait if the collector is still connected.
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let _ = reader.join();
    lock.lock().unwrap_or_else(PoisonError::into_inner).done()
}

/// Writes the current collector the frames it lacks, as they come, until
/// it has acknowledged the end frame, left, or cannot be written to.
fn write_frames(stream: &UnixStream, kept: &Shared) {
    let (lock, ready) = &**kept;
    loop {
        let frames = {
            let mut kept = lock.lock().unwrap_or_else(PoisonError::into_inner);
            while kept.offered == kept.frames.len() && !kept.left && !kept.done() {
                kept = ready.wait(kept).unwrap_or_else(PoisonError::into_inner);
            }
            if kept.left || kept.done() {
                return;
            }
            let from = kept.offered;
            // Counted before they are written: the collector may
            // acknowledge one before its write returns here.
            kept.offered = kept.frames.len();
            kept.frames[from..].to_vec()
        };
        for (tag, body) in &frames {
            if send_frame(stream.as_fd(), *tag, body).is_err() {
                return; // the collector went away
            }
        }
    }
}

/// Reads a collector's acknowledgements into `kept` until it acknowledges
/// the end frame. A collector that leaves, or sends anything but an `ACK`
/// for a frame it was sent, is marked as gone and its socket shut down, so
/// that the writer stops too.
fn read_acks(mut conn: Conn, kept: &Shared) {
    let (lock, ready) = &**kept;
    // An `ACK` is a tag alone: a longer length is garbage, refused before
    // anything is allocated for it.
    conn.set_max_frame(1);
    loop {
        match conn.with_frame(|tag, body| tag == ACK && body.is_empty()) {
            Ok(Some(true)) => {
                let mut kept = lock.lock().unwrap_or_else(PoisonError::into_inner);
                if kept.acked == kept.offered {
                    break; // it acknowledges a frame it was not sent
                }
                kept.acked += 1;
                ready.notify_all();
                if kept.done() {
                    return;
                }
                continue;
            }
            Ok(Some(false)) | Err(_) => break,
            Ok(None) => {}
        }
        if conn.is_eof() {
            break;
        }
        if conn
            .wait(None, Deadline::Never)
            .and_then(|_| conn.fill())
            .is_err()
        {
            break;
        }
    }
    lock.lock().unwrap_or_else(PoisonError::into_inner).left = true;
    ready.notify_all();
    // Wakes a writer that waits for room in the socket.
    let _ = nix::sys::socket::shutdown(conn.raw_fd(), nix::sys::socket::Shutdown::Both);
}

/// Writes one frame as [`Conn`] frames it (the codec's header, then the
/// body: the tag and the payload), waiting for room without reading: what
/// the collector sends is for its reader.
fn send_frame(fd: BorrowedFd<'_>, tag: u8, payload: &[u8]) -> Result<()> {
    let [a, b, c, d] = codec::header(payload.len() + 1)?;
    write_all(fd, &[a, b, c, d, tag])?;
    write_all(fd, payload)
}

fn write_all(fd: BorrowedFd<'_>, mut data: &[u8]) -> Result<()> {
    use nix::errno::Errno;
    use nix::sys::socket::{MsgFlags, send};
    while !data.is_empty() {
        match send(fd.as_raw_fd(), data, MsgFlags::MSG_NOSIGNAL) {
            Ok(n) => data = &data[n..],
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => {
                let mut fds = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLOUT)];
                conn::poll_until(&mut fds, Deadline::Never)?;
            }
            Err(err) => return Err(err.into()),
        }
    }
    Ok(())
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
enum Poll<T> {
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
        tag::ERROR => match conn::remote(body) {
            err @ Error::Remote { .. } => Got::Value(Err(err)),
            err => Got::Bad(err),
        },
        tag::RESULT => Got::End(Ok(())),
        tag::PANIC => Got::End(Err(
            decode::<child::PanicReport>(body).map_or_else(|err| err, Error::from)
        )),
        tag::FAIL => Got::End(Err(
            decode::<Failure>(body).map_or_else(|err| err, Error::from)
        )),
        other => Got::Bad(Error::codec(format_args!("unexpected frame tag {other}"))),
    }
}

impl<T: DeserializeOwned> Background<T> {
    /// The next item, waiting until `deadline`. What it hands out (a value
    /// or the end) is acknowledged to the child first: from then on it is
    /// this collector's, and not the next one's.
    fn poll(&mut self, deadline: Deadline) -> Poll<T> {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Done;
        };
        loop {
            // An acknowledgement that cannot be sent means the child is
            // gone: what it sent is still handed out, then the end of the
            // stream is an error.
            match conn.with_frame(read_frame::<T>) {
                Ok(Some(Got::Value(item))) => {
                    let _ = conn.send_bytes(ACK, &[]);
                    return Poll::Item(item);
                }
                Ok(Some(Got::End(end))) => {
                    let _ = conn.send_bytes(ACK, &[]);
                    self.conn = None;
                    return end.map_or_else(|err| Poll::Item(Err(err)), |()| Poll::Done);
                }
                Ok(Some(Got::Bad(err))) | Err(err) => {
                    self.conn = None;
                    return Poll::Item(Err(err));
                }
                Ok(None) => {}
            }
            if conn.is_eof() {
                self.conn = None;
                return Poll::Item(Err(Error::Disconnected));
            }
            let filled = match conn.wait(None, deadline) {
                Ok(Wake::Timeout) => return Poll::Idle,
                Ok(_) => conn.fill(),
                Err(err) => Err(err),
            };
            if let Err(err) = filled {
                self.conn = None;
                return Poll::Item(Err(err));
            }
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
                Poll::Item(item) => return Some(item),
                Poll::Done => return None,
                Poll::Idle => {}
            }
        }
    }
}

/// What several background calls deliver, as it arrives: see
/// [`Background::gather`]. Yields `(address index, value)`.
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
                    Poll::Item(item) => return Some((i, item)),
                    Poll::Idle => live = true,
                    Poll::Done => {}
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
            if conn::poll_until(&mut fds, Deadline::Never).is_err() {
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
