//! The agent: the program itself, started on another host by a launcher
//! with [`ENV`](super::protocol::ENV) set. It speaks the link's protocol on
//! its standard input and output and starts the children its parent asks
//! for on its host, with the local code (the agent is their parent there:
//! they die with it), relaying each child's frames.
//!
//! It never blocks on one peer: what a child or the link cannot take now
//! waits in an [`Outgoing`] queue. When the link ends (the parent is gone,
//! or the launcher), it stops every child's process group (`SIGTERM`, a
//! grace period, `SIGKILL`) and exits: ssh does not do that for it.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixListener;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::Signal;

use super::outgoing::{Flow, Outgoing, wrap_frames};
use super::protocol::{
    Ended, Exited, HEARTBEAT, Hello, MAGIC, Message, Refused, Spawn, Started, VERSION, output_ids,
    tag,
};
use super::tunnel::{self, Pipe};
use crate::error::Result;
use crate::process::capture;
use crate::process::child::Child;
use crate::process::limits::{self, Limits};
use crate::process::setup::ignore_sigpipe;
use crate::process::spawn::{self, Setup};
use crate::registry;
use crate::wire::codec::encode;
use crate::wire::conn::{self, Conn};
use crate::wire::frame::EXIT_PROTOCOL;
use crate::wire::spec::Mode;
use crate::wire::wait::Deadline;

/// How long children get to exit after `SIGTERM` once the link is gone.
const GRACE: Duration = Duration::from_millis(500);

/// The largest frame on a link: a child's largest, and its wrapping.
pub(crate) const LINK_MAX_FRAME: usize = u32::MAX as usize - 16;

/// Serves the link on standard input and output until it ends, or until
/// it has been silent for `timeout` milliseconds; returns the exit status.
pub(crate) fn serve(timeout: &str) -> i32 {
    ignore_sigpipe();
    let Ok(millis) = timeout.parse::<u64>() else {
        return EXIT_PROTOCOL;
    };
    let Some((input, output)) = adopt_stdio() else {
        return EXIT_PROTOCOL;
    };
    let Ok(mut conn) = Conn::new(input) else {
        return EXIT_PROTOCOL;
    };
    conn.without_shared_memory();
    conn.set_max_frame(LINK_MAX_FRAME);
    let listener = tunnel::listen().ok().map(|(listener, name)| {
        let _ = TUNNEL_NAME.set(name);
        listener
    });
    let mut agent = Agent {
        listener,
        tunnels: BTreeMap::new(),
        next_tunnel: 0,
        link: conn,
        output,
        out: Outgoing::default(),
        kids: BTreeMap::new(),
        silence: Duration::from_millis(millis),
        heard: Instant::now(),
        said: Instant::now(),
        parent: nix::unistd::getppid(),
    };
    agent.out.raw(MAGIC);
    let hello = Hello {
        version: VERSION,
        fingerprint: registry::fingerprint(),
        hostname: std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|name| name.trim().to_owned())
            .unwrap_or_default(),
        pid: std::process::id(),
        cpus: std::thread::available_parallelism()
            .map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX)),
    };
    if agent.send(tag::HELLO, &hello).is_err() {
        return EXIT_PROTOCOL;
    }
    agent.run();
    agent.stop_all();
    0
}

/// Moves the link off standard input and output, leaving `/dev/null` and
/// standard error in their place (a child that prints must not write into
/// the link), and makes both ends non-blocking. Returns the ends to read
/// and to write.
fn adopt_stdio() -> Option<(OwnedFd, OwnedFd)> {
    let input = nix::unistd::dup(std::io::stdin().as_fd()).ok()?;
    let output = nix::unistd::dup(std::io::stdout().as_fd()).ok()?;
    let null = std::fs::File::open("/dev/null").ok()?;
    // SAFETY: replacing our own standard descriptors with others of ours.
    unsafe {
        if libc::dup2(null.as_raw_fd(), 0) < 0 || libc::dup2(2, 1) < 0 {
            return None;
        }
    }
    for fd in [&input, &output] {
        let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL).ok()?;
        let flags = nix::fcntl::OFlag::from_bits_retain(flags)
            | nix::fcntl::OFlag::O_NONBLOCK
            | nix::fcntl::OFlag::O_CLOEXEC;
        nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(flags)).ok()?;
        nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
        .ok()?;
    }
    Some((input, output))
}

/// What a polled descriptor of the agent's is.
#[derive(Clone, Copy)]
enum Owner {
    Listener,
    Kid(u32),
    Exit(u32),
    Tunnel(u32),
}

/// A child of the agent's.
struct Kid {
    /// Read for the child's frames; written through `out`.
    conn: Conn,
    out: Outgoing,
    child: Child,
    /// The child closed its end (or the socket failed): nothing more is
    /// read from it.
    eof: bool,
    /// The parent closed its end: shut the child's down once `out` is
    /// written.
    closing: bool,
    /// Its traffic over the link, each way.
    flow: Flow,
    /// When it exited: it is reaped once all it sent is read, and its
    /// captured output with it (or [`GRACE`] after its exit, for a
    /// descendant that keeps its output open).
    exited: Option<Instant>,
    /// The read ends of its captured output, until the relay takes them.
    outputs: Vec<OwnedFd>,
}

struct Agent {
    /// The link: read from standard input, written to standard output.
    link: Conn,
    output: OwnedFd,
    out: Outgoing,
    kids: BTreeMap<u32, Kid>,
    /// How long the parent may be silent before it counts as gone.
    silence: Duration,
    /// When the parent was last heard, and last told something.
    heard: Instant,
    said: Instant,
    /// The process that started it (sshd's session, srun's step): one
    /// that goes is a link that went, whatever the pipes say.
    parent: nix::unistd::Pid,
    /// The socket its children's managers' clients connect to, if it
    /// could listen, and their connections (see [`tunnel`]).
    listener: Option<UnixListener>,
    tunnels: BTreeMap<u32, Pipe>,
    next_tunnel: u32,
}

/// What [`Agent::wait`] found ready.
#[derive(Default)]
struct Ready {
    link: bool,
    kids: Vec<u32>,
    exited: Vec<u32>,
    listener: bool,
    tunnels: Vec<u32>,
}

/// The name of the agent's tunnel socket, for its children's environment.
static TUNNEL_NAME: OnceLock<String> = OnceLock::new();

impl Agent {
    fn send<T: serde::Serialize>(&mut self, frame_tag: u8, value: &T) -> Result<()> {
        let body = encode(value)?;
        self.out.frame(frame_tag, &[&body])
    }

    /// Relays until the link ends, or is silent for too long.
    fn run(&mut self) {
        loop {
            if !self.out.is_empty() {
                self.said = Instant::now();
            } else if self.said.elapsed() >= HEARTBEAT {
                let _ = self.out.frame(tag::HEARTBEAT, &[]);
                self.said = Instant::now();
            }
            if self.out.write(self.output.as_fd()).is_err() {
                return;
            }
            for (&id, kid) in &mut self.kids {
                // A child that is gone drops what it was sent.
                let _ = kid
                    .flow
                    .deliver(id, &mut kid.out, kid.conn.as_fd(), &mut self.out);
                if kid.closing && kid.out.is_empty() {
                    let _ = nix::sys::socket::shutdown(
                        kid.conn.raw_fd(),
                        nix::sys::socket::Shutdown::Both,
                    );
                    kid.closing = false;
                }
            }
            for (&id, pipe) in &mut self.tunnels {
                pipe.deliver(id, &mut self.out);
            }
            self.tunnels.retain(|_, pipe| !pipe.is_done());
            let Some(ready) = self.wait() else {
                return;
            };
            for id in ready.exited {
                if let Some(kid) = self.kids.get_mut(&id) {
                    kid.exited = Some(Instant::now());
                }
            }
            for id in ready.kids {
                self.read_kid(id);
            }
            if ready.listener
                && let Some(listener) = &self.listener
            {
                while let Some(pipe) = tunnel::accept(listener) {
                    self.next_tunnel = self.next_tunnel.wrapping_add(1);
                    self.tunnels.insert(tunnel::TUNNEL | self.next_tunnel, pipe);
                }
            }
            for id in ready.tunnels {
                if let Some(pipe) = self.tunnels.get_mut(&id) {
                    pipe.read(id, &mut self.out);
                }
            }
            let done: Vec<u32> = self
                .kids
                .iter()
                .filter(|&(id, kid)| {
                    kid.exited.is_some_and(|at| {
                        kid.eof
                            && (at.elapsed() > GRACE
                                || output_ids(*id).iter().all(|stream| {
                                    self.tunnels.get(stream).is_none_or(Pipe::is_done)
                                }))
                    })
                })
                .map(|(&id, _)| id)
                .collect();
            for id in done {
                self.reap(id);
            }
            if ready.link && !self.read_link() {
                return;
            }
            if self.heard.elapsed() > self.silence || nix::unistd::getppid() != self.parent {
                // The parent is gone or cut off: ssh may never say so.
                return;
            }
        }
    }

    /// Waits for the link, a child's socket or exit, or a tunnel; returns
    /// which are ready, or `None` if polling failed.
    fn wait(&self) -> Option<Ready> {
        // The link's two ends may be one socket or two pipes: room to
        // write is asked of the one written.
        let output = if self.out.is_empty() {
            PollFlags::empty()
        } else {
            PollFlags::POLLOUT
        };
        let mut fds = vec![
            PollFd::new(self.link.as_fd(), PollFlags::POLLIN),
            PollFd::new(self.output.as_fd(), output),
        ];
        let mut owners = Vec::new();
        if let Some(listener) = &self.listener {
            fds.push(PollFd::new(listener.as_fd(), PollFlags::POLLIN));
            owners.push(Owner::Listener);
        }
        for (&id, kid) in &self.kids {
            let events = kid.flow.events(kid.eof, &kid.out);
            if !events.is_empty() {
                fds.push(PollFd::new(kid.conn.as_fd(), events));
                owners.push(Owner::Kid(id));
            }
            if let Some(exit) = kid.child.exit_fd().filter(|_| kid.exited.is_none()) {
                fds.push(PollFd::new(exit, PollFlags::POLLIN));
                owners.push(Owner::Exit(id));
            }
        }
        for (&id, pipe) in &self.tunnels {
            if let Some(fd) = pipe.fd().filter(|_| !pipe.events().is_empty()) {
                fds.push(PollFd::new(fd, pipe.events()));
                owners.push(Owner::Tunnel(id));
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
        let is_ready = |fd: &PollFd<'_>| fd.revents().is_some_and(|r| !r.is_empty());
        let mut ready = Ready {
            link: is_ready(&fds[0]),
            ..Ready::default()
        };
        for (fd, owner) in fds[2..].iter().zip(&owners) {
            if is_ready(fd) {
                match *owner {
                    Owner::Listener => ready.listener = true,
                    Owner::Kid(id) => ready.kids.push(id),
                    Owner::Exit(id) => ready.exited.push(id),
                    Owner::Tunnel(id) => ready.tunnels.push(id),
                }
            }
        }
        Some(ready)
    }

    /// Reads what the link holds and acts on each frame; `false` once the
    /// link has ended or lost its framing.
    fn read_link(&mut self) -> bool {
        match self.link.fill() {
            Ok(0) => {}
            Ok(_) => self.heard = Instant::now(),
            Err(_) => return false,
        }
        loop {
            let Self {
                link,
                out,
                kids,
                tunnels,
                ..
            } = self;
            match link.with_frame(|frame_tag, body| order(kids, tunnels, out, frame_tag, body)) {
                Ok(Some(true)) => {}
                Ok(None) => break,
                Ok(Some(false)) | Err(_) => return false,
            }
        }
        !self.link.is_eof()
    }

    /// Relays what child `id` sent, as far as its window lets it.
    fn read_kid(&mut self, id: u32) {
        let Some(kid) = self.kids.get_mut(&id) else {
            return;
        };
        // A child whose stream lost its framing says nothing more that
        // can be read; its exit is still reported.
        if !kid.eof
            && kid.flow.may_read()
            && wrap_frames(&mut kid.conn, id, &mut self.out, &mut kid.flow)
        {
            kid.eof = true;
        }
    }

    /// Child `id` exited and all it sent is relayed: reaps it and says how
    /// it ended.
    fn reap(&mut self, id: u32) {
        let Some(mut kid) = self.kids.remove(&id) else {
            return;
        };
        let status = kid
            .child
            .wait(Deadline::Never)
            .map_or(Ended::Unknown, Ended::from);
        let expired = kid.child.expired();
        let _ = self.send(
            tag::EXITED,
            &Exited {
                id,
                status,
                expired,
            },
        );
    }

    /// Stops every child: `SIGTERM`, up to [`GRACE`] to exit, `SIGKILL`,
    /// each with its process group.
    fn stop_all(&mut self) {
        for kid in self.kids.values() {
            let _ = kid.child.signal(Signal::SIGTERM);
        }
        let until = Deadline::after(GRACE);
        for kid in self.kids.values() {
            let _ = kid.child.wait_exited(until);
        }
        for kid in self.kids.values() {
            let _ = kid.child.signal(Signal::SIGKILL);
        }
        // Dropping reaps each.
        self.kids.clear();
    }
}

/// Acts on one frame from the parent; `false` if it makes no sense.
fn order(
    kids: &mut BTreeMap<u32, Kid>,
    tunnels: &mut BTreeMap<u32, Pipe>,
    out: &mut Outgoing,
    frame_tag: u8,
    body: &[u8],
) -> bool {
    match Message::parse(frame_tag, body) {
        Some(Message::Frame { id, tag, payload }) => {
            // A child that has ended takes nothing more.
            if let Some(kid) = kids.get_mut(&id) {
                let _ = kid.out.frame(tag, &[payload]);
            }
            true
        }
        Some(Message::Spawn(spawn)) => {
            let id = spawn.id;
            let outcome = start(&spawn).map(|mut kid| {
                let pid = kid.child.pid.as_raw().cast_unsigned();
                for (fd, stream) in kid.outputs.drain(..).zip(output_ids(id)) {
                    tunnels.insert(stream, Pipe::source(fd));
                }
                kids.insert(id, kid);
                pid
            });
            let Ok(body) = encode(&Started { id, outcome }) else {
                return false;
            };
            out.frame(tag::STARTED, &[&body]).is_ok()
        }
        Some(Message::Signal(signal)) => {
            if let (Some(kid), Ok(sig)) = (kids.get(&signal.id), Signal::try_from(signal.signal)) {
                let _ = kid.child.signal(sig);
            }
            true
        }
        Some(Message::Heartbeat) => true,
        Some(Message::Credit { id, bytes }) => {
            if let Some(kid) = kids.get_mut(&id) {
                kid.flow.credited(bytes);
            } else if let Some(pipe) = tunnels.get_mut(&id) {
                pipe.credited(bytes);
            }
            true
        }
        Some(Message::Bytes { id, data }) => {
            if let Some(pipe) = tunnels.get_mut(&id) {
                pipe.bytes(data);
            }
            true
        }
        Some(Message::Shut(id)) => {
            if let Some(pipe) = tunnels.get_mut(&id) {
                pipe.shut();
            }
            true
        }
        Some(Message::Close(id)) => {
            if let Some(kid) = kids.get_mut(&id) {
                kid.closing = true;
            }
            true
        }
        // What only an agent says, or nothing of the link's.
        Some(Message::Started(_) | Message::Exited(_) | Message::Open { .. }) | None => false,
    }
}

/// Starts a child as `spawn` says.
fn start(spawn: &Spawn) -> std::result::Result<Kid, Refused> {
    let Some(mode) = Mode::from_letter(&spawn.mode) else {
        return Err(Refused::Order(format!("no role `{}`", spawn.mode)));
    };
    if mode == Mode::Call && !registry::is_registered(&spawn.name) {
        return Err(Refused::Unregistered(spawn.name.clone()));
    }
    let failed = |err: crate::error::Error| Refused::Spawn(crate::error::with_causes(&err));
    let (ours, theirs) = conn::socketpair().map_err(failed)?;
    let pipes = if spawn.capture {
        Some((
            capture::pipe().map_err(failed)?,
            capture::pipe().map_err(failed)?,
        ))
    } else {
        None
    };
    let mut setup = Setup {
        group: spawn.group,
        ..Setup::default()
    };
    if let Some(((_, out), (_, err))) = &pipes {
        setup.stdout = Some(out.as_fd());
        setup.stderr = Some(err.as_fd());
    }
    if let Some(name) = TUNNEL_NAME.get() {
        setup.env.push((tunnel::ENV, name));
    }
    // As a local parent does (see `Builder::spawn`): a backtrace printed
    // after a failed allocation would lose the evidence of it.
    if spawn.memory.is_some() {
        setup.env.push(("RUST_BACKTRACE", "0"));
        if spawn.backtrace {
            setup.env.push(("RUST_LIB_BACKTRACE", "1"));
        }
    } else if spawn.backtrace {
        setup.env.push(("RUST_BACKTRACE", "1"));
    }
    let limits = Limits {
        deadline: spawn.deadline_ms.map(Duration::from_millis),
        memory: spawn.memory,
        cpu: spawn.cpu,
    };
    let program = spawn
        .program
        .as_deref()
        .map(|path| std::path::Path::new(std::ffi::OsStr::from_bytes(path)));
    let spawned = spawn::spawn(
        &spawn.name,
        program,
        &theirs,
        registry::fingerprint(),
        mode,
        &setup,
    )
    .map_err(failed)?;
    drop(setup);
    drop(theirs);
    let mut outputs = Vec::new();
    for (read, _) in pipes.into_iter().flat_map(|(out, err)| [out, err]) {
        tunnel::nonblocking(&read).map_err(|err| failed(crate::error::Error::Io(err)))?;
        outputs.push(read);
    }
    let mut child = Child::new(spawned.pid, spawned.pidfd.map(Arc::new));
    child.group = spawn.group;
    // Before the parent hears it started: its arguments come after.
    limits::apply(&mut child, limits).map_err(failed)?;
    // Read only: what the child sends in shared memory is read out of it
    // here, and crosses the link as bytes.
    // The frame limit is the parent's to apply: a frame over it crosses
    // and is refused there, as from a local child.
    let mut conn = Conn::new(ours).map_err(failed)?;
    conn.set_max_frame(LINK_MAX_FRAME - 16);
    Ok(Kid {
        conn,
        out: Outgoing::default(),
        child,
        eof: false,
        closing: false,
        flow: Flow::default(),
        exited: None,
        outputs,
    })
}
