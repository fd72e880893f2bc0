//! Re-executing the current program as a child that runs one registered
//! function.
//!
//! The child's end of a socketpair is put at [`CHILD_FD`] by a `posix_spawn`
//! dup2 file action, so it exists in that child only; the parent's copies are
//! close-on-exec. glibc's `posix_spawn` uses `CLONE_VFORK`, so starting a
//! child costs the same whatever the parent's size.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;
use std::sync::Mutex;
use std::sync::mpsc;

use nix::spawn::{PosixSpawnAttr, PosixSpawnFileActions, PosixSpawnFlags, posix_spawn};
use nix::sys::signal::SigSet;
use nix::unistd::Pid;

use crate::error::{Error, Result};
use crate::lock::lock;
use crate::wire::log::LOG_FD;
use crate::wire::spec::{CHILD_FD, ENV, Mode, Spec};

/// A started child, before it is wrapped in a handle.
pub(crate) struct Spawned {
    pub(crate) pid: Pid,
    pub(crate) pidfd: Option<OwnedFd>,
}

impl Spawned {
    /// A child started some other way (forked).
    pub(crate) fn new(pid: Pid) -> Self {
        Self {
            pid,
            pidfd: pidfd_open(pid),
        }
    }
}

/// How a child is set up besides its channel.
#[derive(Debug, Default)]
pub(crate) struct Setup<'a> {
    /// Lead a process group of its own, so that its descendants can be
    /// signalled with it.
    pub(crate) group: bool,
    /// Descriptors to put at the child's standard output and error.
    pub(crate) stdout: Option<BorrowedFd<'a>>,
    pub(crate) stderr: Option<BorrowedFd<'a>>,
    /// A worker's result log, to put at [`LOG_FD`].
    pub(crate) log: Option<BorrowedFd<'a>>,
    /// Variables to set in the child's environment.
    pub(crate) env: Vec<(&'static str, &'static str)>,
}

/// What the spawner thread needs for one child.
struct Order {
    program: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    child_fd: RawFd,
    group: bool,
    stdout: Option<RawFd>,
    stderr: Option<RawFd>,
    log: Option<RawFd>,
}

/// An order for the spawner thread, and where its answer goes.
type Request = (Order, mpsc::SyncSender<nix::Result<Pid>>);

/// Starts `program` (by default this executable) as a child that runs the
/// function registered as `name`, with `channel` as its end of the socket.
pub(crate) fn spawn(
    name: &str,
    program: Option<&Path>,
    channel: &OwnedFd,
    fingerprint: u64,
    mode: Mode,
    setup: &Setup<'_>,
) -> Result<Spawned> {
    let spawn_err = |err: io::Error| Error::Spawn(err);
    let program = cstring(program.map_or(OsStr::new("/proc/self/exe"), Path::as_os_str))
        .map_err(spawn_err)?;
    // The parent's argv is not passed on: only its name, for `ps`.
    let argv0 = std::env::args_os()
        .next()
        .unwrap_or_else(|| OsString::from("pproc-child"));
    let argv = vec![cstring(&argv0).map_err(spawn_err)?];
    let mut envp = Vec::new();
    for (key, value) in std::env::vars_os() {
        if key != ENV && !setup.env.iter().any(|(k, _)| key == *k) {
            let mut pair = key.into_vec();
            pair.push(b'=');
            pair.extend_from_slice(value.as_bytes());
            // Variables with interior NULs cannot exist in a real
            // environment; skip rather than fail.
            if let Ok(pair) = CString::new(pair) {
                envp.push(pair);
            }
        }
    }
    let spec = Spec {
        fd: CHILD_FD,
        parent: std::process::id().cast_signed(),
        fingerprint,
        mode,
        name,
    }
    .render();
    envp.push(CString::new(spec).map_err(|err| spawn_err(io::Error::other(err)))?);
    for (key, value) in &setup.env {
        envp.push(
            CString::new(format!("{key}={value}"))
                .map_err(|err| spawn_err(io::Error::other(err)))?,
        );
    }

    let order = Order {
        program,
        argv,
        envp,
        child_fd: channel.as_raw_fd(),
        group: setup.group,
        stdout: setup.stdout.map(|fd| fd.as_raw_fd()),
        stderr: setup.stderr.map(|fd| fd.as_raw_fd()),
        log: setup.log.map(|fd| fd.as_raw_fd()),
    };
    let pid = if on_main_thread() {
        // The main thread lives as long as the process: no hand-off.
        spawn_now(&order)
    } else {
        let gone = || spawn_err(io::Error::other("the spawner thread is gone"));
        let (reply, answer) = mpsc::sync_channel(1);
        spawner()
            .map_err(spawn_err)?
            .send((order, reply))
            .map_err(|_| gone())?;
        answer.recv().map_err(|_| gone())?
    }
    .map_err(|err| spawn_err(err.into()))?;
    Ok(Spawned {
        pid,
        pidfd: pidfd_open(pid),
    })
}

fn cstring(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(io::Error::other)
}

/// Whether this is the process's main thread, whose end is the process's.
fn on_main_thread() -> bool {
    nix::unistd::gettid() == nix::unistd::getpid()
}

/// The sender to the one thread that starts the children of this
/// process's other threads.
///
/// `PR_SET_PDEATHSIG` fires when the *thread* that created a child ends, not
/// the process: children started from a short-lived thread would be killed
/// with it. A dedicated thread that lives as long as the process avoids that.
/// A forked child (`Exchange::create`) has no such thread, though it has a
/// copy of the parent's sender: the process id tells them apart.
fn spawner() -> io::Result<mpsc::Sender<Request>> {
    static SPAWNER: Mutex<Option<(u32, mpsc::Sender<Request>)>> = Mutex::new(None);
    let mut spawner = lock(&SPAWNER);
    let pid = std::process::id();
    if let Some((owner, tx)) = spawner.as_ref()
        && *owner == pid
    {
        return Ok(tx.clone());
    }
    let (tx, rx) = mpsc::channel::<Request>();
    // A failure to start the thread is returned and not kept: the next
    // spawn tries again.
    std::thread::Builder::new()
        .name("pproc-spawner".into())
        .spawn(move || {
            for (order, reply) in rx {
                let result = spawn_now(&order);
                // The requester may have given up; nothing to do then.
                let _ = reply.send(result);
            }
        })?;
    // A sender copied from the parent by fork is left alone: its channel's
    // state belongs to a thread that does not exist here.
    if let Some(stale) = spawner.replace((pid, tx.clone())) {
        std::mem::forget(stale);
    }
    Ok(tx)
}

fn spawn_now(request: &Order) -> nix::Result<Pid> {
    let mut actions = PosixSpawnFileActions::init()?;
    // Every descriptor is put in place by a dup2 in the child, in turn: one
    // that sits where another goes would be overwritten first, and one
    // dup2'd onto itself would keep close-on-exec. Move those out of the
    // way.
    let mut moved = Vec::new();
    let mut clear = |fd: RawFd| -> nix::Result<RawFd> {
        if !(CHILD_FD..=LOG_FD).contains(&fd) {
            return Ok(fd);
        }
        let copy = nix::fcntl::fcntl(
            // SAFETY: the requester keeps the descriptor open until we reply.
            unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
            nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(LOG_FD + 1),
        )?;
        // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that we own.
        moved.push(unsafe { OwnedFd::from_raw_fd(copy) });
        Ok(copy)
    };
    let child_fd = clear(request.child_fd)?;
    let log = request.log.map(&mut clear).transpose()?;
    let stdout = request.stdout.map(&mut clear).transpose()?;
    let stderr = request.stderr.map(&mut clear).transpose()?;
    actions.add_dup2(child_fd, CHILD_FD)?;
    if let Some(fd) = log {
        actions.add_dup2(fd, LOG_FD)?;
    }
    if let Some(fd) = stdout {
        actions.add_dup2(fd, libc::STDOUT_FILENO)?;
    }
    if let Some(fd) = stderr {
        actions.add_dup2(fd, libc::STDERR_FILENO)?;
    }
    let mut attr = PosixSpawnAttr::init()?;
    // The child starts with no blocked signals, whatever this thread's mask.
    attr.set_sigmask(&SigSet::empty())?;
    let mut flags = PosixSpawnFlags::POSIX_SPAWN_SETSIGMASK;
    if request.group {
        // A process group of its own, led by the child.
        attr.set_pgroup(Pid::from_raw(0))?;
        flags |= PosixSpawnFlags::POSIX_SPAWN_SETPGROUP;
    }
    attr.set_flags(flags)?;
    let pid = posix_spawn(
        request.program.as_c_str(),
        &actions,
        &attr,
        &request.argv,
        &request.envp,
    );
    drop(moved);
    pid
}

/// A pidfd for `pid`, or `None` where the kernel has none (before 5.3).
pub(crate) fn pidfd_open(pid: Pid) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor
    // (close-on-exec) or -1; nix has no wrapper for it.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    let fd = RawFd::try_from(fd).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: the syscall returned a new descriptor that nothing else owns.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}
