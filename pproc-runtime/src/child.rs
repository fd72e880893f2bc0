//! Child mode: a constructor that runs before `main`, finds the registered
//! function the parent asked for, runs it and exits.

use std::cell::RefCell;
use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::channel::Channel;
use crate::conn::{Conn, Deadline, Wake, decode, tag};
use crate::error::Error;
use crate::{registry, spawn};

/// Exit status of a child whose environment or first frame was malformed, or
/// whose parent vanished before sending the arguments.
pub const EXIT_PROTOCOL: i32 = 120;
/// Exit status of a child asked to run a name that is not registered.
pub const EXIT_UNREGISTERED: i32 = 121;
/// Exit status of a child whose build differs from its parent's.
pub const EXIT_VERSION_SKEW: i32 = 122;
/// Exit status of a child that aborted because an allocation failed,
/// reported as [`Error::LimitExceeded`] under a
/// [`Builder::memory_limit`](crate::Builder::memory_limit), and as
/// [`Error::OutOfMemory`] otherwise.
///
/// A child tells such an abort from any other by `errno`: the C allocator
/// sets it to `ENOMEM` when it fails, and Rust's allocation-failure path
/// (a printed line, then `abort()`) keeps it, unless std also prints a
/// backtrace there (`RUST_BACKTRACE` set), which overwrites it. Stable
/// Rust has no hook into that path (`std::alloc::set_alloc_error_hook` and
/// `-Z oom=panic` are unstable), so where the evidence is lost the abort is
/// reported as it looks: [`Error::Signaled`] with `SIGABRT`.
pub const EXIT_OUT_OF_MEMORY: i32 = 123;

/// Why a child could not run its function, sent in a `FAIL` frame.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum Failure {
    Unregistered { name: String },
    VersionSkew { parent: u64, child: u64 },
    Codec { message: String },
}

impl From<Failure> for Error {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Unregistered { name } => Self::Unregistered { name },
            Failure::VersionSkew { parent, child } => Self::VersionSkew { parent, child },
            Failure::Codec { message } => Self::Codec { message },
        }
    }
}

/// A panic's message and location, as sent in a `PANIC` frame.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct PanicReport {
    pub(crate) message: String,
    pub(crate) location: Option<String>,
    /// The backtrace, when the child captured one (`RUST_BACKTRACE`).
    pub(crate) backtrace: Option<String>,
}

impl From<PanicReport> for Error {
    fn from(report: PanicReport) -> Self {
        Self::Panicked {
            message: report.message,
            location: report.location,
            backtrace: report.backtrace,
        }
    }
}

/// What a registered function's shim gets: its arguments and the channel.
///
/// Not public API.
#[doc(hidden)]
#[derive(Debug)]
pub struct Context {
    args: Vec<u8>,
    conn: Arc<Mutex<Conn>>,
}

impl Context {
    pub(crate) fn new(args: Vec<u8>, conn: Arc<Mutex<Conn>>) -> Self {
        Self { args, conn }
    }
}

pub(crate) fn lock(conn: &Mutex<Conn>) -> MutexGuard<'_, Conn> {
    conn.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs a return-value function: decodes its arguments, calls it under
/// `catch_unwind` and sends its result or its panic.
///
/// Not public API: the shim `#[parallel]` generates calls it.
#[doc(hidden)]
pub fn run_entry<A, R>(cx: Context, f: impl FnOnce(A) -> R)
where
    A: DeserializeOwned,
    R: Serialize,
{
    run(cx, |args, _| f(args));
}

/// Runs a channel-style function, handing it the child's end of the channel
/// as its first argument.
///
/// Not public API: the shim `#[parallel]` generates calls it.
#[doc(hidden)]
pub fn run_channel_entry<S, V, A, R>(cx: Context, f: impl FnOnce(Channel<S, V>, A) -> R)
where
    A: DeserializeOwned,
    R: Serialize,
{
    run(cx, |args, conn| f(Channel::new(conn), args));
}

fn run<A, R>(cx: Context, f: impl FnOnce(A, Arc<Mutex<Conn>>) -> R)
where
    A: DeserializeOwned,
    R: Serialize,
{
    let Context { args, conn } = cx;
    let args = match decode::<A>(&args) {
        Ok(args) => args,
        Err(err) => {
            let message = format!("the arguments do not decode: {err}");
            let _ = lock(&conn).send_value(tag::FAIL, &Failure::Codec { message });
            return;
        }
    };
    report(&conn, || f(args, Arc::clone(&conn)));
}

/// Calls `f` under `catch_unwind` and sends its result or its panic.
fn report<R: Serialize>(conn: &Mutex<Conn>, f: impl FnOnce() -> R) {
    IN_ENTRY.set(true);
    let outcome = panic::catch_unwind(AssertUnwindSafe(f));
    IN_ENTRY.set(false);
    let mut conn = lock(conn);
    // The parent may be gone; then there is nobody to tell.
    let _ = match outcome {
        Ok(value) => match conn.send_value(tag::RESULT, &value) {
            Err(Error::Codec { message }) => {
                let message = format!("the result does not encode: {message}");
                conn.send_value(tag::FAIL, &Failure::Codec { message })
            }
            other => other,
        },
        Err(payload) => {
            let report = LAST_PANIC
                .with_borrow_mut(Option::take)
                .unwrap_or_else(|| PanicReport {
                    message: payload_text(payload.as_ref()),
                    location: None,
                    backtrace: None,
                });
            conn.send_value(tag::PANIC, &report)
        }
    };
}

fn payload_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "Box<dyn Any>".to_owned())
}

thread_local! {
    /// The last panic on this thread, recorded by the hook for `run`.
    static LAST_PANIC: RefCell<Option<PanicReport>> = const { RefCell::new(None) };
    /// Set on the thread that runs the entry function: its panics are
    /// reported to the parent, not printed.
    static IN_ENTRY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The channel of this child, once dispatch has set it up; the panic hook
/// reports through it when panics abort.
pub(crate) static CHILD_CONN: std::sync::OnceLock<Arc<Mutex<Conn>>> = std::sync::OnceLock::new();

pub(crate) fn install_panic_hook() {
    let previous = panic::take_hook();
    panic::set_hook(Box::new(move |info| {
        // Captured only where `RUST_BACKTRACE` asks for it, as std's own
        // hook does.
        let backtrace = std::backtrace::Backtrace::capture();
        let report = PanicReport {
            message: info.payload_as_str().unwrap_or("Box<dyn Any>").to_owned(),
            location: info.location().map(ToString::to_string),
            backtrace: (backtrace.status() == std::backtrace::BacktraceStatus::Captured)
                .then(|| backtrace.to_string()),
        };
        let in_entry = IN_ENTRY.get();
        if cfg!(panic = "abort") {
            // Nothing will catch this panic: report it now, before the abort.
            if let Some(conn) = CHILD_CONN.get()
                && let Ok(mut conn) = conn.try_lock()
            {
                let _ = conn.send_value(tag::PANIC, &report);
            }
        } else {
            LAST_PANIC.set(Some(report));
        }
        // The entry's panic is data for the parent (`Error::Panicked`);
        // panics on the child's other threads are printed as usual.
        if !in_entry {
            previous(info);
        }
    }));
}

/// Tells an abort that follows a failed allocation from any other abort.
///
/// Rust's allocation-failure path (`handle_alloc_error`) prints a line and
/// calls `abort()`; stable Rust offers no hook into it (`set_alloc_error_hook`
/// and `-Z oom=panic` are unstable), and a `#[global_allocator]` is the
/// program's choice, not ours. What the path does leave is `errno`: the C
/// allocator sets it to `ENOMEM` when it fails, and neither the print nor
/// `abort()` changes it on the way. So a `SIGABRT` handler on the aborting
/// thread that finds `ENOMEM` there exits with [`EXIT_OUT_OF_MEMORY`]; any
/// other abort goes on as one (the handler resets itself, so `abort()`'s own
/// second raise kills the process with `SIGABRT`, core dump and all).
///
/// The evidence can fail one way: a print that touches `errno` (a
/// backtrace, or standard error closed) replaces it, and the abort is then
/// reported as `SIGABRT`.
pub(crate) fn watch_aborts() {
    extern "C" fn on_abort(_: libc::c_int) {
        // SAFETY: reading this thread's errno is async-signal-safe, and so
        // is `_exit`.
        unsafe {
            if *libc::__errno_location() == libc::ENOMEM {
                libc::_exit(EXIT_OUT_OF_MEMORY);
            }
        }
    }
    let handler: extern "C" fn(libc::c_int) = on_abort;
    // SAFETY: a zeroed sigaction is valid; the handler only reads errno and
    // may call `_exit`, both async-signal-safe.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler as libc::sighandler_t;
        action.sa_flags = libc::SA_RESETHAND;
        libc::sigemptyset(&raw mut action.sa_mask);
        libc::sigaction(libc::SIGABRT, &raw const action, std::ptr::null_mut());
    }
}

/// The signature glibc calls `.init_array` entries with.
type Constructor =
    unsafe extern "C" fn(libc::c_int, *const *const libc::c_char, *const *const libc::c_char);

/// Runs before `main` in every program that links pproc. In a parent it
/// returns at once; in a child it never returns.
extern "C" fn dispatch(
    count: libc::c_int,
    args: *const *const libc::c_char,
    env: *const *const libc::c_char,
) {
    let Some(spec) = std::env::var_os(spawn::ENV) else {
        return;
    };
    // SAFETY: we are a constructor called by the loader with its own
    // arguments, and we never return to it (see below).
    unsafe { run_later_constructors(count, args, env) };
    // SAFETY: constructors run before `main`, while the process has one
    // thread, so nothing reads the environment concurrently.
    unsafe { std::env::remove_var(spawn::ENV) };
    let code = panic::catch_unwind(|| child_main(&spec.to_string_lossy())).unwrap_or(EXIT_PROTOCOL);
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    std::process::exit(code);
}

#[used]
#[unsafe(link_section = ".init_array")]
static DISPATCH: Constructor = dispatch;

unsafe extern "C" {
    // Defined by the linker around the executable's `.init_array`.
    static __init_array_start: [usize; 0];
    static __init_array_end: [usize; 0];
}

/// Runs the constructors that come after ours in `.init_array`, so that
/// every `inventory` registration is in before the child looks a name up.
///
/// The linker orders constructors by link order, which fat LTO does not
/// keep: a registration can come after this dispatcher. A child never
/// returns to the loader, so each of these runs exactly once, in order.
///
/// # Safety
///
/// Only for `dispatch`, called by the loader with its arguments, which then
/// never returns.
unsafe fn run_later_constructors(
    count: libc::c_int,
    args: *const *const libc::c_char,
    env: *const *const libc::c_char,
) {
    // SAFETY: the linker defines both symbols around `.init_array`, an
    // array of function addresses (relocated at load time) that lives for
    // the whole process; `end` is not before `start`.
    let entries = unsafe {
        let start = (&raw const __init_array_start).cast::<usize>();
        let end = (&raw const __init_array_end).cast::<usize>();
        let len = usize::try_from(end.offset_from(start)).unwrap_or(0);
        std::slice::from_raw_parts(start, len)
    };
    let ours = dispatch as Constructor as usize;
    let Some(at) = entries.iter().position(|&entry| entry == ours) else {
        return;
    };
    // 0 and -1 are the old terminators some toolchains still emit.
    for &entry in entries[at + 1..]
        .iter()
        .filter(|&&e| e != 0 && e != usize::MAX)
    {
        // SAFETY: every other entry is a constructor that the loader would
        // call next, with these arguments; it will not be called again.
        unsafe {
            let constructor = std::mem::transmute::<usize, Constructor>(entry);
            constructor(count, args, env);
        }
    }
}

/// The signal a child that leads its own process group gets when its
/// parent dies: its handler takes the whole group down.
pub(crate) fn parent_death_signal() -> libc::c_int {
    libc::SIGRTMAX()
}

/// Kills this process's group, this process included.
extern "C" fn on_parent_death(_: libc::c_int) {
    // SAFETY: kill(2) is async-signal-safe; 0 names our own group.
    unsafe { libc::kill(0, libc::SIGKILL) };
}

/// Makes this process die with `parent`, and checks for the race where the
/// parent died first (then we have been re-parented). Returns `false` if it
/// did.
///
/// A process that leads its own group takes the group with it: its
/// descendants there (processes it started with `std::process::Command`,
/// say) die too, however the parent died. Otherwise `SIGKILL` ends this
/// process alone.
fn tie_to_parent(parent: nix::unistd::Pid) -> bool {
    let leader = nix::unistd::getpgrp() == nix::unistd::getpid();
    let signal = if leader {
        let handler: extern "C" fn(libc::c_int) = on_parent_death;
        // SAFETY: a zeroed sigaction is valid; the handler only calls
        // kill(2), which is async-signal-safe. nix's `sigaction` takes no
        // real-time signals.
        let installed = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = handler as libc::sighandler_t;
            libc::sigemptyset(&raw mut action.sa_mask);
            libc::sigaction(
                parent_death_signal(),
                &raw const action,
                std::ptr::null_mut(),
            ) == 0
        };
        if installed {
            parent_death_signal()
        } else {
            libc::SIGKILL
        }
    } else {
        libc::SIGKILL
    };
    // SAFETY: PR_SET_PDEATHSIG takes a signal number; nix's wrapper takes
    // no real-time signals.
    let set = unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::c_ulong::try_from(signal).unwrap_or(9),
            0,
            0,
            0,
        )
    } == 0;
    if !set || nix::unistd::getppid() != parent {
        if leader {
            on_parent_death(signal);
        }
        return false;
    }
    true
}

/// The parsed `PPROC_CHILD` variable.
pub(crate) struct Spec<'a> {
    fd: i32,
    parent: i32,
    fingerprint: u64,
    mode: spawn::Mode,
    name: &'a str,
}

pub(crate) fn parse(spec: &str) -> Option<Spec<'_>> {
    let mut parts = spec.splitn(5, ' ');
    Some(Spec {
        fd: parts.next()?.parse().ok()?,
        parent: parts.next()?.parse().ok()?,
        fingerprint: u64::from_str_radix(parts.next()?, 16).ok()?,
        mode: spawn::Mode::from_letter(parts.next()?)?,
        name: parts.next()?,
    })
}

fn child_main(spec: &str) -> i32 {
    let Some(spec) = parse(spec) else {
        return EXIT_PROTOCOL;
    };
    if let spawn::Mode::Background { streams } = spec.mode {
        return crate::background::serve(spec.fd, spec.fingerprint, spec.name, streams);
    }
    if !tie_to_parent(nix::unistd::Pid::from_raw(spec.parent)) {
        return EXIT_PROTOCOL;
    }
    crate::tree::set_parent(spec.parent);
    watch_aborts();
    // As Rust's runtime does for `main`: writes to a closed pipe fail with
    // EPIPE instead of killing the process.
    // SAFETY: setting a signal to SIG_IGN installs no handler code.
    unsafe {
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigIgn,
        );
    }
    // SAFETY: the parent placed our end of the socketpair at this
    // descriptor with a posix_spawn dup2 action; nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(spec.fd) };
    // Keep the channel out of processes that user code starts.
    let cloexec = nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC);
    if nix::fcntl::fcntl(&fd, cloexec).is_err() {
        return EXIT_PROTOCOL;
    }
    let Ok(mut conn) = Conn::new(fd) else {
        return EXIT_PROTOCOL;
    };
    let ours = registry::fingerprint();
    if ours != spec.fingerprint {
        let failure = Failure::VersionSkew {
            parent: spec.fingerprint,
            child: ours,
        };
        let _ = conn.send_value(tag::FAIL, &failure);
        return EXIT_VERSION_SKEW;
    }
    if spec.name == WORKER {
        return worker(conn);
    }
    if spec.name == crate::manager::MANAGER {
        return crate::manager::serve_child(&mut conn);
    }
    let Some(entry) = registry::lookup(spec.name) else {
        let failure = Failure::Unregistered {
            name: spec.name.to_owned(),
        };
        let _ = conn.send_value(tag::FAIL, &failure);
        return EXIT_UNREGISTERED;
    };
    let Some(args) = first_frame(&mut conn) else {
        return EXIT_PROTOCOL;
    };
    let conn = Arc::new(Mutex::new(conn));
    let _ = CHILD_CONN.set(Arc::clone(&conn));
    install_panic_hook();
    entry.run(Context { args, conn });
    0
}

/// The name of the children that [`Exchange::create`](crate::Exchange::create)
/// forks, as their handles and origins report it.
pub(crate) const FORKED: &str = "pproc::create";

/// Forks a child that runs `f` with its end of a new channel and exits
/// without returning; returns the parent's end and the child.
///
/// The child runs `f` under `catch_unwind`, reports its end as a
/// `#[parallel]` child does (`RESULT` or `PANIC`), and leaves with
/// `_exit`, so that no destructor of the parent's state runs twice.
///
/// # Safety
///
/// As `fork` in a program that may have other threads: in the child, `f`
/// must not need a lock that another thread of the parent held (see
/// [`Exchange::create`](crate::Exchange::create)).
pub(crate) unsafe fn fork<T, F>(f: F, group: bool) -> crate::Result<(Conn, spawn::Spawned)>
where
    T: Serialize,
    F: FnOnce(Channel<T, ()>),
{
    let (ours, theirs) = crate::conn::socketpair()?;
    let parent = nix::unistd::getpid();
    // Anything buffered now would be written twice, once by each process.
    let _ = std::io::stdout().flush();
    // SAFETY: the caller upholds fork's contract; the child below only
    // runs `f` and leaves with `_exit`.
    match unsafe { nix::unistd::fork() }.map_err(|err| Error::Spawn(err.into()))? {
        nix::unistd::ForkResult::Parent { child } => {
            if group {
                // Both sides set the group, so that it exists before either
                // goes on (the child may not have run yet). Fails only if
                // the child has done it already, or died.
                let _ = nix::unistd::setpgid(child, child);
            }
            drop(theirs);
            let conn = Conn::new(ours)?;
            Ok((conn, spawn::Spawned::new(child)))
        }
        nix::unistd::ForkResult::Child => {
            drop(ours);
            // Lead a process group, as spawned children do, and die with
            // the parent, unless it died already.
            if group {
                let _ = nix::unistd::setpgid(
                    nix::unistd::Pid::from_raw(0),
                    nix::unistd::Pid::from_raw(0),
                );
            }
            crate::tree::set_parent(parent.as_raw());
            watch_aborts();
            let code = if !tie_to_parent(parent) {
                EXIT_PROTOCOL
            } else if let Ok(conn) = Conn::new(theirs) {
                let conn = Arc::new(Mutex::new(conn));
                // A child of a child keeps its own channel for panics that
                // abort; the hook is installed once per process.
                if CHILD_CONN.set(Arc::clone(&conn)).is_ok() {
                    install_panic_hook();
                }
                let channel = Channel::new(Arc::clone(&conn));
                report(&conn, || f(channel));
                0
            } else {
                EXIT_PROTOCOL
            };
            let _ = std::io::stdout().flush();
            let _ = std::io::stderr().flush();
            // SAFETY: `_exit` ends the process at once, without running
            // the parent's destructors or exit handlers a second time.
            unsafe { libc::_exit(code) }
        }
    }
}

/// The name a reusable worker is started under: it runs the functions that
/// `CALL` frames name, one after the other, until its parent closes the
/// channel.
pub(crate) const WORKER: &str = "pproc::__worker";

/// A reusable worker (pprocess's `MakeReusable`): after the `ARGS` frame
/// that every child gets, runs one call per `CALL` frame.
fn worker(mut conn: Conn) -> i32 {
    if first_frame(&mut conn).is_none() {
        return EXIT_PROTOCOL;
    }
    let conn = Arc::new(Mutex::new(conn));
    let _ = CHILD_CONN.set(Arc::clone(&conn));
    install_panic_hook();
    loop {
        let call = {
            let mut conn = lock(&conn);
            next_call(&mut conn)
        };
        let Some((name, args)) = call else {
            // The parent closed the channel: no more work.
            return 0;
        };
        if let Some(entry) = registry::lookup(&name) {
            entry.run(Context {
                args,
                conn: Arc::clone(&conn),
            });
        } else {
            let failure = Failure::Unregistered { name };
            if lock(&conn).send_value(tag::FAIL, &failure).is_err() {
                return 0;
            }
        }
    }
}

/// Splits a `CALL` body into the function's name and its arguments.
pub(crate) fn split_call(body: &[u8]) -> Option<(String, Vec<u8>)> {
    let len = usize::try_from(u32::from_le_bytes(body.get(..4)?.try_into().ok()?)).ok()?;
    let name = std::str::from_utf8(body.get(4..4 + len)?).ok()?;
    Some((name.to_owned(), body[4 + len..].to_vec()))
}

/// The body of a `CALL` frame.
pub(crate) fn join_call(name: &str, args: &[u8]) -> Vec<u8> {
    let len = u32::try_from(name.len()).unwrap_or(u32::MAX);
    let mut body = Vec::with_capacity(4 + name.len() + args.len());
    body.extend_from_slice(&len.to_le_bytes());
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(args);
    body
}

/// Waits for the next `CALL` frame; `None` once the parent is gone or
/// sends something else.
fn next_call(conn: &mut Conn) -> Option<(String, Vec<u8>)> {
    wait_for(conn, tag::CALL, split_call)
}

/// Waits for the `ARGS` frame; `None` if the parent went away or sent
/// something else.
pub(crate) fn first_frame(conn: &mut Conn) -> Option<Vec<u8>> {
    wait_for(conn, tag::ARGS, |body| Some(body.to_vec()))
}

/// Blocks until the next frame, and reads it with `read` if its tag is
/// `want`; `None` if the parent went away or sent anything else.
fn wait_for<T>(conn: &mut Conn, want: u8, read: impl Fn(&[u8]) -> Option<T>) -> Option<T> {
    loop {
        match conn.with_frame(|tag, body| (tag == want).then(|| read(body))) {
            Ok(Some(frame)) => return frame.flatten(),
            Ok(None) if !conn.is_eof() => {}
            _ => return None,
        }
        match conn.wait(None, Deadline::Never) {
            Ok(Wake::Socket) => {
                conn.fill().ok()?;
            }
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_frames_round_trip() {
        let body = join_call("m::f", &[1, 2, 3]);
        assert_eq!(split_call(&body), Some(("m::f".to_owned(), vec![1, 2, 3])));
        assert_eq!(split_call(&body[..5]), None);
        assert_eq!(split_call(&[]), None);
    }

    #[test]
    fn spec_parses_names_with_colons() {
        let spec = parse("3 42 00000000000000ff c my_crate::m::add").unwrap();
        assert_eq!((spec.fd, spec.parent, spec.fingerprint), (3, 42, 255));
        assert_eq!(spec.mode, spawn::Mode::Child);
        assert_eq!(spec.name, "my_crate::m::add");
        let spec = parse("3 42 00000000000000ff s my_crate::m::add").unwrap();
        assert_eq!(spec.mode, spawn::Mode::Background { streams: true });
        assert!(parse("3 42 00000000000000ff x name").is_none());
        assert!(parse("3 42 zz c name").is_none());
        assert!(parse("3 42").is_none());
    }
}
