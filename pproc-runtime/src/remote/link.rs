//! The parent's end of a host: one link per launcher, to the agent it
//! started, and a relay thread that carries each remote child's frames
//! between the child's local socket (the one its [`Handle`](crate::Handle)
//! reads, as for a local child) and the link.
//!
//! The relay never blocks on one peer: what a handle or the link cannot
//! take now waits in an [`Outgoing`] queue. A child's end is made known
//! (its exit descriptor turns readable) only once every frame it sent is
//! in its socket. When the link ends, every child on it ends as
//! [`Status::Lost`], which its handle reports as
//! [`Error::HostLost`](crate::Error::HostLost).

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::agent::LINK_MAX_FRAME;
use super::binary;
use super::launcher::{Binary, Launcher};
use super::outgoing::{Flow, Outgoing, wrap_frames};
use super::protocol::{
    ENV, HEARTBEAT, MAGIC, MAX_SKIPPED, Message, Refused, Spawn, VERSION, output_ids, tag,
};
use super::tunnel::{self, Pipe};
use crate::error::{Error, Result};
use crate::lock::{lock, wait_timeout};
use crate::process::child::{RemoteEnd, Status};
use crate::process::limits::Limits;
use crate::registry;
use crate::wire::codec::encode;
use crate::wire::conn::{Conn, Next};
use crate::wire::spec::Mode;
use crate::wire::wait::{Deadline, poll_until};

/// How much of a launcher's standard error an error quotes.
const QUOTED: usize = 4096;

/// The links this process has, by launcher (its `Debug` form). Each slot
/// is held while its link connects: two starters do not start two agents
/// on a host, and a host that is slow to answer holds up no other.
static LINKS: Mutex<BTreeMap<String, Arc<Slot>>> = Mutex::new(BTreeMap::new());

/// A host's link, once it is connected.
type Slot = Mutex<Option<Arc<Link>>>;

/// One host's link, shared by the handles of its children.
#[derive(Debug)]
pub(crate) struct Link {
    host: String,
    /// What the relay thread is to do next, and the descriptor that wakes
    /// it for that.
    orders: Mutex<Vec<Order>>,
    wake: EventFd,
    next: AtomicU32,
    /// Its children not ended yet.
    live: AtomicUsize,
    /// Set once the link has ended: no more children start on it.
    lost: Mutex<bool>,
}

/// Something for the relay thread to do.
#[derive(Debug)]
enum Order {
    /// Start a child, relaying through `Route`.
    Spawn(Box<Route>, Vec<u8>),
    Signal(u32, i32),
    /// End the link: the agent stops its children and exits.
    Disconnect,
    /// The connection to a manager for tunnel `id`, or why there is none.
    Opened(u32, std::io::Result<OwnedFd>),
}

/// A remote child as its handle's end knows it.
#[derive(Debug)]
pub(crate) struct End {
    host: String,
    id: u32,
    link: Weak<Link>,
    /// Readable once `state.status` is set: its write end is dropped.
    exit: Arc<OwnedFd>,
    exit_writer: Mutex<Option<OwnedFd>>,
    state: Mutex<State>,
    news: Condvar,
}

#[derive(Debug, Default)]
struct State {
    started: Option<std::result::Result<u32, Refused>>,
    status: Option<Status>,
    expired: bool,
}

impl End {
    /// Its end is known: `status`.
    fn finish(&self, status: Status) {
        let mut state = lock(&self.state);
        if state.status.is_none() {
            state.status = Some(status);
            if let Some(link) = self.link.upgrade() {
                link.live.fetch_sub(1, Ordering::Relaxed);
            }
        }
        if state.started.is_none() {
            state.started = Some(Err(Refused::Spawn("its host was lost".to_owned())));
        }
        drop(state);
        self.news.notify_all();
        // Closing the write end makes the read end readable.
        lock(&self.exit_writer).take();
    }

    fn started(&self, outcome: std::result::Result<u32, Refused>) {
        lock(&self.state).started = Some(outcome);
        self.news.notify_all();
    }

    /// The pid the agent started it as, once it says so, by `until`.
    fn wait_started(&self, until: Instant) -> Result<std::result::Result<u32, Refused>> {
        let mut state = lock(&self.state);
        loop {
            if let Some(outcome) = &state.started {
                return Ok(outcome.clone());
            }
            let Some(left) = until.checked_duration_since(Instant::now()) else {
                return Err(Error::Launch {
                    host: self.host.clone(),
                    message: "the agent did not say in time whether it started the child"
                        .to_owned(),
                });
            };
            state = wait_timeout(&self.news, state, left);
        }
    }

    /// The descriptor that turns readable once its end is known.
    pub(crate) fn exit(&self) -> Arc<OwnedFd> {
        Arc::clone(&self.exit)
    }
}

impl RemoteEnd for End {
    fn host(&self) -> &str {
        &self.host
    }

    fn exit_fd(&self) -> BorrowedFd<'_> {
        self.exit.as_fd()
    }

    fn status(&self) -> Option<Status> {
        lock(&self.state).status
    }

    fn expired(&self) -> bool {
        lock(&self.state).expired
    }

    fn signal(&self, signal: Signal) -> Result<()> {
        if let Some(link) = self.link.upgrade() {
            link.order(Order::Signal(self.id, signal as i32));
        }
        Ok(())
    }
}

/// A child's socket on the relay's side.
#[derive(Debug)]
struct Route {
    conn: Conn,
    out: Outgoing,
    end: Arc<End>,
    /// The handle's end is closed: nothing more is read.
    eof: bool,
    /// The agent said how the child ended: told once `out` is written.
    ended: Option<Status>,
    /// Its traffic over the link, each way.
    flow: Flow,
    /// Where its captured output goes, until the relay takes them.
    outputs: Vec<(u32, Pipe)>,
}

impl Link {
    fn order(&self, order: Order) {
        lock(&self.orders).push(order);
        let _ = self.wake.write(1);
    }
}

/// Starts the function registered as `name`, in the role `mode`, on the
/// host `launcher` reaches (connecting to it first if this process has not
/// yet). Returns the connection its handle reads, its pid there, and its
/// end.
///
/// With `capture`, the write ends of two pipes, the child's standard
/// output and error arrive there.
pub(crate) fn start(
    launcher: &Arc<dyn Launcher>,
    name: &str,
    mode: Mode,
    options: &Options<'_>,
    capture: Option<[OwnedFd; 2]>,
) -> Result<(Conn, Pid, Arc<End>)> {
    let Options {
        group,
        max_frame,
        limits,
        backtrace,
        program,
    } = *options;
    let link = connected(launcher)?;
    let host = launcher.host();
    let (ours, theirs) = crate::wire::conn::socketpair()?;
    let mut conn = Conn::new(ours)?;
    conn.without_shared_memory();
    conn.set_max_frame(max_frame);
    // What the handle sends is its own: the relay takes any frame.
    let mut relayed = Conn::new(theirs)?;
    relayed.without_shared_memory();
    relayed.set_max_frame(LINK_MAX_FRAME - 16);
    let (exit, exit_writer) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|err| Error::Spawn(std::io::Error::from(err)))?;
    let id = link.next.fetch_add(1, Ordering::Relaxed);
    let end = Arc::new(End {
        host: host.clone(),
        id,
        link: Arc::downgrade(&link),
        exit: Arc::new(exit),
        exit_writer: Mutex::new(Some(exit_writer)),
        state: Mutex::new(State::default()),
        news: Condvar::new(),
    });
    let spawn = encode(&Spawn {
        id,
        name: name.to_owned(),
        mode: mode.letter().to_string(),
        group,
        deadline_ms: limits
            .deadline
            .map(|after| u64::try_from(after.as_millis()).unwrap_or(u64::MAX)),
        memory: limits.memory,
        cpu: limits.cpu,
        backtrace,
        capture: capture.is_some(),
        program: program.map(|path| path.as_os_str().as_bytes().to_vec()),
    })?;
    let mut outputs = Vec::new();
    for (fd, stream) in capture.into_iter().flatten().zip(output_ids(id)) {
        tunnel::nonblocking(&fd).map_err(Error::Spawn)?;
        outputs.push((stream, Pipe::sink(fd)));
    }
    let route = Route {
        conn: relayed,
        out: Outgoing::default(),
        end: Arc::clone(&end),
        eof: false,
        ended: None,
        flow: Flow::default(),
        outputs,
    };
    if *lock(&link.lost) {
        return Err(Error::HostLost { host });
    }
    link.live.fetch_add(1, Ordering::Relaxed);
    link.order(Order::Spawn(Box::new(route), spawn));
    let until = Instant::now() + launcher.connect_timeout();
    match end.wait_started(until)? {
        Ok(pid) => Ok((conn, Pid::from_raw(pid.cast_signed()), end)),
        Err(Refused::Unregistered(name)) => Err(Error::Unregistered { name }),
        Err(Refused::Spawn(why) | Refused::Order(why)) => Err(Error::Spawn(std::io::Error::other(
            format!("on `{host}`: {why}"),
        ))),
    }
}

/// What a child on another host is started with, from its builder.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Options<'a> {
    pub(crate) group: bool,
    /// The program to run it from, at this path on the host.
    pub(crate) program: Option<&'a std::path::Path>,
    pub(crate) max_frame: usize,
    pub(crate) limits: Limits,
    pub(crate) backtrace: bool,
}

/// Whether `launcher`'s host is connected, and how many children this
/// process runs there.
pub(crate) fn state(launcher: &dyn Launcher) -> (bool, usize) {
    let key = format!("{launcher:?}");
    let Some(slot) = lock(&LINKS).get(&key).cloned() else {
        return (false, 0);
    };
    // A slot held by a connect in progress: not up yet.
    let Ok(slot) = slot.try_lock() else {
        return (false, 0);
    };
    match &*slot {
        Some(link) if !*lock(&link.lost) => (true, link.live.load(Ordering::Relaxed)),
        _ => (false, 0),
    }
}

/// Ends `launcher`'s link, if it has one: the agent stops its children
/// (which end as lost) and exits.
pub(crate) fn disconnect(launcher: &dyn Launcher) {
    let key = format!("{launcher:?}");
    let Some(slot) = lock(&LINKS).remove(&key) else {
        return;
    };
    if let Some(link) = lock(&slot).take() {
        link.order(Order::Disconnect);
    }
}

/// Connects `launcher`'s host now, if it is not yet.
pub(crate) fn connect_now(launcher: &Arc<dyn Launcher>) -> Result<()> {
    connected(launcher).map(drop)
}

/// The link of `launcher`, connected now if there is none yet.
fn connected(launcher: &Arc<dyn Launcher>) -> Result<Arc<Link>> {
    let key = format!("{launcher:?}");
    let slot = Arc::clone(lock(&LINKS).entry(key.clone()).or_default());
    let mut slot = lock(&slot);
    if let Some(link) = &*slot
        && !*lock(&link.lost)
    {
        return Ok(Arc::clone(link));
    }
    let (conn, agent) = connect(launcher.as_ref()).inspect_err(|err| {
        crate::trace::agent_failed(&launcher.host(), err);
    })?;
    let silence = launcher.host_timeout();
    let link = Arc::new(Link {
        host: launcher.host(),
        orders: Mutex::new(Vec::new()),
        wake: EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(Error::from_errno)?,
        next: AtomicU32::new(0),
        live: AtomicUsize::new(0),
        lost: Mutex::new(false),
    });
    let relay = Arc::clone(&link);
    std::thread::Builder::new()
        .name(format!("pproc-link-{}", link.host))
        .spawn(move || run(&relay, conn, agent, silence))
        .map_err(Error::Spawn)?;
    *slot = Some(Arc::clone(&link));
    Ok(link)
}

/// Starts the agent through `launcher` and reads its hello, placing the
/// program on the host first where its [`Binary`] says. Returns the link
/// and the launcher's process.
fn connect(launcher: &dyn Launcher) -> Result<(Conn, std::process::Child)> {
    let here = std::env::current_exe().map_err(|err| Error::Launch {
        host: launcher.host(),
        message: format!("no path to this program: {err}"),
    })?;
    let mut first = None;
    if launcher.binary() != Binary::Copy {
        match start_agent(launcher, here.as_os_str()) {
            Ok(up) => return Ok(up),
            Err(Failed::Missing(err) | Failed::Skewed(err))
                if launcher.binary() == Binary::SamePath =>
            {
                return Err(err);
            }
            Err(Failed::Other(err)) => return Err(err),
            // Not there, or another build there: a copy of this one.
            Err(Failed::Missing(err) | Failed::Skewed(err)) => first = Some(err),
        }
    }
    let there = binary::place(launcher, &here).map_err(|err| match first {
        Some(first) => Error::Launch {
            host: launcher.host(),
            message: format!("{first}; and no copy could be made: {err}"),
        },
        None => err,
    })?;
    start_agent(launcher, &there).map_err(Failed::into_error)
}

/// Why an agent did not start.
enum Failed {
    /// The program is not at that path on the host (the launcher's
    /// command exited 126 or 127).
    Missing(Error),
    /// Another build answered.
    Skewed(Error),
    Other(Error),
}

impl Failed {
    fn into_error(self) -> Error {
        match self {
            Self::Missing(err) | Self::Skewed(err) | Self::Other(err) => err,
        }
    }
}

/// Starts the agent, the program at `exe` on the host, and reads its hello.
fn start_agent(
    launcher: &dyn Launcher,
    exe: &OsStr,
) -> std::result::Result<(Conn, std::process::Child), Failed> {
    let began = Instant::now();
    let host = launcher.host();
    let failed = |message: String| Error::Launch {
        host: host.clone(),
        message,
    };
    let silence = launcher.host_timeout().as_millis();
    let argv = [
        OsString::from("env"),
        OsString::from(format!("{ENV}={silence}")),
        exe.to_owned(),
    ];
    let (ours, theirs) = UnixStream::pair().map_err(|err| Failed::Other(Error::Spawn(err)))?;
    let mut command = launcher.command(&argv);
    let program = command.get_program().to_string_lossy().into_owned();
    let theirs_too = theirs
        .try_clone()
        .map_err(|err| Failed::Other(Error::Spawn(err)))?;
    command
        .stdin(Stdio::from(OwnedFd::from(theirs_too)))
        .stdout(Stdio::from(OwnedFd::from(theirs)))
        .stderr(Stdio::piped());
    let spawned = command.spawn();
    // The command holds our copies of the launcher's ends: without them,
    // the link ends when the launcher does.
    drop(command);
    let mut process =
        spawned.map_err(|err| Failed::Other(failed(format!("cannot run `{program}`: {err}"))))?;
    let said = process.stderr.take().map(tee);
    let stop = |process: &mut std::process::Child, why: String| {
        let _ = process.kill();
        let status = process.wait();
        let quoted = said.as_ref().map(Said::text).unwrap_or_default();
        let mut message = why;
        let code = status.ok().and_then(|status| status.code());
        if let Some(code) = code {
            let _ = write!(message, " (`{program}` exited with {code})");
        }
        if !quoted.is_empty() {
            let _ = write!(message, "; it said: {quoted}");
        }
        match code {
            // A shell's "cannot execute" and "not found".
            Some(126 | 127) => Failed::Missing(failed(message)),
            _ => Failed::Other(failed(message)),
        }
    };
    let deadline = Deadline::after(launcher.connect_timeout());
    let ours = OwnedFd::from(ours);
    if let Err(why) = skip_to_magic(ours.as_fd(), deadline) {
        return Err(stop(&mut process, why));
    }
    let link = Conn::new(ours).map(|mut conn| {
        conn.without_shared_memory();
        conn.set_max_frame(LINK_MAX_FRAME);
        conn
    });
    let mut conn = match link {
        Ok(conn) => conn,
        Err(err) => return Err(stop(&mut process, err.to_string())),
    };
    let hello = match conn.next(deadline, None, super::protocol::hello) {
        Ok(Next::Frame(Some(Ok(hello)))) => hello,
        Ok(Next::Timeout) => {
            return Err(stop(
                &mut process,
                "the agent sent no hello in time".to_owned(),
            ));
        }
        Ok(_) => {
            return Err(stop(
                &mut process,
                "the agent ended before its hello".to_owned(),
            ));
        }
        Err(err) => {
            return Err(stop(
                &mut process,
                format!("the agent's hello is not one: {err}"),
            ));
        }
    };
    if hello.version != VERSION {
        return Err(stop(
            &mut process,
            format!(
                "the agent speaks version {} of the protocol, not {VERSION}",
                hello.version
            ),
        ));
    }
    if hello.fingerprint != registry::fingerprint() {
        let _ = process.kill();
        let _ = process.wait();
        return Err(Failed::Skewed(Error::VersionSkew {
            parent: registry::fingerprint(),
            child: hello.fingerprint,
            host: Some(host),
        }));
    }
    crate::trace::agent_connected(&host, hello.pid, &hello.hostname, began.elapsed());
    Ok((conn, process))
}

/// Reads the link a byte at a time (so that nothing after it is taken)
/// until the agent's magic, skipping at most [`MAX_SKIPPED`] bytes of
/// whatever a remote shell printed first.
pub(super) fn skip_to_magic(
    fd: BorrowedFd<'_>,
    deadline: Deadline,
) -> std::result::Result<(), String> {
    let mut seen: Vec<u8> = Vec::new();
    loop {
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        match poll_until(&mut fds, deadline) {
            Ok(true) => {}
            Ok(false) => return Err(format!("the agent did not answer in time{}", shown(&seen))),
            Err(err) => return Err(err.to_string()),
        }
        let mut byte = [0u8; 1];
        match nix::unistd::read(fd, &mut byte) {
            Ok(0) => return Err(format!("the launcher closed the link{}", shown(&seen))),
            Ok(_) => seen.push(byte[0]),
            Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => {}
            Err(err) => return Err(err.to_string()),
        }
        if seen.ends_with(MAGIC) {
            return Ok(());
        }
        if seen.len() > MAX_SKIPPED + MAGIC.len() {
            return Err(format!("no agent answered{}", shown(&seen)));
        }
    }
}

/// What came before the agent's magic, for an error.
fn shown(seen: &[u8]) -> String {
    if seen.is_empty() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&seen[..seen.len().min(200)]);
    format!(
        " (before it, the link carried {} bytes: {:?})",
        seen.len(),
        text.trim()
    )
}

/// The start of what a launcher wrote to its standard error.
struct Said {
    /// What it wrote, and whether it has closed its end.
    kept: Mutex<(Vec<u8>, bool)>,
    news: Condvar,
}

impl Said {
    /// What the launcher said, once it has closed its standard error (or
    /// a moment has passed: its children may hold it open).
    fn text(self: &Arc<Self>) -> String {
        let until = Instant::now() + std::time::Duration::from_secs(1);
        let mut kept = lock(&self.kept);
        while !kept.1
            && let Some(left) = until.checked_duration_since(Instant::now())
        {
            kept = wait_timeout(&self.news, kept, left);
        }
        String::from_utf8_lossy(&kept.0).trim().to_owned()
    }
}

/// Copies the launcher's standard error to ours, keeping its first
/// [`QUOTED`] bytes for errors.
fn tee(mut from: std::process::ChildStderr) -> Arc<Said> {
    let said = Arc::new(Said {
        kept: Mutex::new((Vec::new(), false)),
        news: Condvar::new(),
    });
    let keep = Arc::clone(&said);
    let _ = std::thread::Builder::new()
        .name("pproc-link-stderr".into())
        .spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = from.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let mut kept = lock(&keep.kept);
                let room = QUOTED.saturating_sub(kept.0.len());
                kept.0.extend_from_slice(&buf[..n.min(room)]);
                drop(kept);
                let _ = std::io::stderr().write_all(&buf[..n]);
            }
            lock(&keep.kept).1 = true;
            keep.news.notify_all();
        });
    said
}

/// The relay: runs until the link ends, then ends every child on it as
/// lost.
fn run(link: &Arc<Link>, mut conn: Conn, mut process: std::process::Child, silence: Duration) {
    let mut routes: BTreeMap<u32, Route> = BTreeMap::new();
    let mut out = Outgoing::default();
    let asked = relay(link, &mut conn, &mut out, &mut routes, silence);
    crate::trace::link_ended(&link.host, asked);
    // The next child on this host starts a new agent.
    *lock(&link.lost) = true;
    if asked {
        // The agent reads the link's end, stops its children and exits,
        // and the launcher with it: a moment to do so before it is killed.
        let _ = nix::sys::socket::shutdown(conn.raw_fd(), nix::sys::socket::Shutdown::Write);
        let until = Instant::now() + Duration::from_secs(2);
        while Instant::now() < until && matches!(process.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    for order in lock(&link.orders).drain(..) {
        if let Order::Spawn(route, _) = order {
            route.end.finish(Status::Lost);
        }
    }
    for (_, mut route) in routes {
        // What arrived is delivered, as far as the socket takes it now.
        let _ = route.out.write(route.conn.as_fd());
        route.end.finish(route.ended.unwrap_or(Status::Lost));
    }
    let _ = process.kill();
    let _ = process.wait();
}

/// Relays until the link ends, or is silent for `silence`; `true` if it
/// was asked to end.
fn relay(
    link: &Arc<Link>,
    conn: &mut Conn,
    out: &mut Outgoing,
    routes: &mut BTreeMap<u32, Route>,
    silence: Duration,
) -> bool {
    let (mut heard, mut said) = (Instant::now(), Instant::now());
    // Connections of the host's children to managers here: they end with
    // the link.
    let mut tunnels: BTreeMap<u32, Pipe> = BTreeMap::new();
    loop {
        for order in std::mem::take(&mut *lock(&link.orders)) {
            let sent = match order {
                Order::Spawn(mut route, body) => {
                    let id = route.end.id;
                    tunnels.extend(route.outputs.drain(..));
                    routes.insert(id, *route);
                    out.frame(tag::SPAWN, &[&body])
                }
                Order::Signal(id, signal) => encode(&super::protocol::Signal { id, signal })
                    .and_then(|body| out.frame(tag::SIGNAL, &[&body])),
                Order::Disconnect => {
                    // What waits goes out first, as far as it goes now.
                    let _ = out.write(conn.as_fd());
                    return true;
                }
                Order::Opened(id, reached) => {
                    if let Some(pipe) = tunnels.get_mut(&id) {
                        match reached {
                            Ok(fd) => pipe.connected(fd),
                            Err(_) => pipe.failed(id, out),
                        }
                    }
                    Ok(())
                }
            };
            if sent.is_err() {
                return false;
            }
        }
        if !out.is_empty() {
            said = Instant::now();
        } else if said.elapsed() >= HEARTBEAT {
            let _ = out.frame(tag::HEARTBEAT, &[]);
            said = Instant::now();
        }
        if out.write(conn.as_fd()).is_err() {
            return false;
        }
        deliver(out, routes, &mut tunnels);
        let Some((link_ready, readable)) = wait(link, conn, out, routes, &tunnels) else {
            return false;
        };
        for id in readable {
            if let Some(route) = routes.get_mut(&id) {
                from_handle(id, route, out);
            } else if let Some(pipe) = tunnels.get_mut(&id) {
                pipe.read(id, out);
            }
        }
        if link_ready {
            let mut heard_now = Heard {
                link,
                routes,
                tunnels: &mut tunnels,
                out,
            };
            match from_agent(conn, &mut heard_now) {
                Some(true) => heard = Instant::now(),
                Some(false) => {}
                None => return false,
            }
        }
        if heard.elapsed() > silence {
            // The agent, its host or the link hangs without closing.
            return false;
        }
    }
}

/// Writes what waits for each child's handle and each tunnel, as far as
/// their sockets take it now; tells the handles of children that ended
/// once they have it all.
fn deliver(
    out: &mut Outgoing,
    routes: &mut BTreeMap<u32, Route>,
    tunnels: &mut BTreeMap<u32, Pipe>,
) {
    routes.retain(|&id, route| {
        // A handle that is gone drops what it was sent.
        let _ = route
            .flow
            .deliver(id, &mut route.out, route.conn.as_fd(), out);
        match route.ended {
            Some(status) if route.out.is_empty() => {
                route.end.finish(status);
                false
            }
            _ => true,
        }
    });
    for (&id, pipe) in &mut *tunnels {
        pipe.deliver(id, out);
    }
    tunnels.retain(|_, pipe| !pipe.is_done());
}

/// Waits for the link, a wake-up, a handle or a tunnel: whether the link
/// is readable, and which handles and tunnels are ready; `None` if
/// polling failed.
fn wait(
    link: &Link,
    conn: &Conn,
    out: &Outgoing,
    routes: &BTreeMap<u32, Route>,
    tunnels: &BTreeMap<u32, Pipe>,
) -> Option<(bool, Vec<u32>)> {
    let mut events = PollFlags::POLLIN;
    if !out.is_empty() {
        events |= PollFlags::POLLOUT;
    }
    let mut fds = vec![
        PollFd::new(conn.as_fd(), events),
        PollFd::new(link.wake.as_fd(), PollFlags::POLLIN),
    ];
    let mut owners = Vec::new();
    for (&id, route) in routes {
        let events = route.flow.events(route.eof, &route.out);
        if !events.is_empty() {
            fds.push(PollFd::new(route.conn.as_fd(), events));
            owners.push(id);
        }
    }
    let mut pipes = Vec::new();
    for (&id, pipe) in tunnels {
        if let Some(fd) = pipe.fd().filter(|_| !pipe.events().is_empty()) {
            fds.push(PollFd::new(fd, pipe.events()));
            pipes.push(id);
        }
    }
    let tick = PollTimeout::try_from(HEARTBEAT).unwrap_or(PollTimeout::MAX);
    loop {
        match poll(&mut fds, tick) {
            Ok(_) => break,
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return None,
        }
    }
    let ready = |fd: &PollFd<'_>| fd.revents().is_some_and(|r| !r.is_empty());
    let link_ready = ready(&fds[0]);
    if ready(&fds[1]) {
        let _ = link.wake.read();
    }
    let readable: Vec<u32> = fds[2..]
        .iter()
        .zip(owners.iter().chain(&pipes))
        .filter(|(fd, _)| ready(fd))
        .map(|(_, &id)| id)
        .collect();
    drop(fds);
    Some((link_ready, readable))
}

/// Relays what child `id`'s handle sent; tells the agent once the handle
/// closed its end.
fn from_handle(id: u32, route: &mut Route, out: &mut Outgoing) {
    if route.eof || !route.flow.may_read() {
        return;
    }
    if wrap_frames(&mut route.conn, id, out, &mut route.flow) {
        route.eof = true;
        let _ = out.frame(tag::CLOSE, &[&id.to_le_bytes()]);
    }
}

/// What acts on the agent's frames.
struct Heard<'a> {
    link: &'a Arc<Link>,
    routes: &'a mut BTreeMap<u32, Route>,
    tunnels: &'a mut BTreeMap<u32, Pipe>,
    out: &'a mut Outgoing,
}

/// Reads what the agent sent and acts on it; whether anything came, or
/// `None` once the link has ended or broken its protocol.
fn from_agent(conn: &mut Conn, heard: &mut Heard<'_>) -> Option<bool> {
    let got = conn.fill().ok()?;
    loop {
        match conn.with_frame(|frame_tag, body| heard.frame(frame_tag, body)) {
            Ok(Some(true)) => {}
            Ok(None) => break,
            Ok(Some(false)) | Err(_) => return None,
        }
    }
    (!conn.is_eof()).then_some(got > 0)
}

impl Heard<'_> {
    /// Acts on one frame from the agent; `false` if it makes no sense.
    fn frame(&mut self, frame_tag: u8, body: &[u8]) -> bool {
        let routes = &mut *self.routes;
        match Message::parse(frame_tag, body) {
            Some(Message::Frame { id, tag, payload }) => {
                if let Some(route) = routes.get_mut(&id) {
                    let _ = route.out.frame(tag, &[payload]);
                }
                true
            }
            Some(Message::Started(started)) => {
                if let Some(route) = routes.get(&started.id) {
                    if started.outcome.is_err() {
                        let route = routes.remove(&started.id);
                        for stream in output_ids(started.id) {
                            self.tunnels.remove(&stream);
                        }
                        if let Some(route) = route {
                            route.end.started(started.outcome);
                            route.end.finish(Status::Unknown);
                        }
                    } else {
                        route.end.started(started.outcome);
                    }
                }
                true
            }
            Some(Message::Heartbeat) => true,
            Some(Message::Credit { id, bytes }) => {
                if let Some(route) = routes.get_mut(&id) {
                    route.flow.credited(bytes);
                } else if let Some(pipe) = self.tunnels.get_mut(&id) {
                    pipe.credited(bytes);
                }
                true
            }
            Some(Message::Exited(exited)) => {
                if let Some(route) = routes.get_mut(&exited.id) {
                    route.ended = Some(exited.status.into());
                    lock(&route.end.state).expired = exited.expired;
                }
                true
            }
            Some(Message::Open { id, address }) => {
                self.open(id, address);
                true
            }
            Some(Message::Bytes { id, data }) => {
                if let Some(pipe) = self.tunnels.get_mut(&id) {
                    pipe.bytes(data);
                }
                true
            }
            Some(Message::Shut(id)) => {
                if let Some(pipe) = self.tunnels.get_mut(&id) {
                    pipe.shut();
                }
                true
            }
            // What only a parent says, or nothing of the link's.
            Some(Message::Spawn(_) | Message::Signal(_) | Message::Close(_)) | None => false,
        }
    }

    /// A child on the host connects to the manager at `address`: reached
    /// on a thread of its own, so that the relay never waits for it, and
    /// only if this process reaches that manager itself (see
    /// [`tunnel::Opener`]).
    fn open(&mut self, id: u32, address: &[u8]) {
        if id & tunnel::TUNNEL == 0 || self.tunnels.contains_key(&id) {
            return;
        }
        let mut pipe = Pipe::new(None);
        let address = address.to_vec();
        let link = Arc::downgrade(self.link);
        let started = std::thread::Builder::new()
            .name("pproc-tunnel".into())
            .spawn(move || {
                let reached = tunnel::open(&address);
                if let Some(link) = link.upgrade() {
                    link.order(Order::Opened(id, reached));
                }
            });
        if started.is_err() {
            pipe.failed(id, self.out);
            return;
        }
        self.tunnels.insert(id, pipe);
    }
}
