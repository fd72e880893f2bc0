//! What a child process sets up about itself before anything else runs:
//! dying with its parent, telling an out-of-memory abort from any other,
//! telling a stack overflow from any other fault, and surviving writes to
//! closed pipes.

use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicUsize, Ordering};

use crate::wire::frame::{EXIT_OUT_OF_MEMORY, EXIT_STACK_OVERFLOW};

/// As Rust's runtime does for `main`: writes to a closed pipe fail with
/// `EPIPE` instead of killing the process.
pub(crate) fn ignore_sigpipe() {
    // SAFETY: setting a signal to SIG_IGN installs no handler code.
    unsafe {
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigIgn,
        );
    }
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

/// The size of the alternate stack the fault handler runs on: the
/// overflowed stack has no room left for it.
const ALT_STACK: usize = 64 << 10;

/// The thread whose stack [`watch_overflows`] knows, and the guard region
/// of that stack, `[GUARD_START, GUARD_END)`. A fault there is an
/// overflow.
static WATCHED: AtomicI32 = AtomicI32::new(0);
static GUARD_START: AtomicUsize = AtomicUsize::new(0);
static GUARD_END: AtomicUsize = AtomicUsize::new(0);

/// The registered name of the function the child runs, for the message:
/// set by [`running`] before it runs.
static NAME: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());
static NAME_LEN: AtomicUsize = AtomicUsize::new(0);

/// Records that the function registered as `name` runs now, on the thread
/// [`watch_overflows`] watches: an overflow is reported under this name.
pub(crate) fn running(name: &'static str) {
    NAME_LEN.store(0, Ordering::Relaxed);
    NAME.store(name.as_ptr().cast_mut(), Ordering::Relaxed);
    NAME_LEN.store(name.len(), Ordering::Release);
}

/// Tells a stack overflow on the calling thread from any other fault.
///
/// std's runtime does this for `main` and the threads it spawns, but a
/// child runs its function from a constructor, before that runtime starts,
/// so without this an overflow is a bare `SIGSEGV`. As std does, this
/// finds the thread's stack (`pthread_getattr_np`), gives the thread an
/// alternate signal stack, and installs a `SIGSEGV` and `SIGBUS` handler
/// that runs there. A fault whose address lies in the guard region just
/// below the stack is an overflow: the handler writes a line to standard
/// error, naming the function [`running`] recorded, and exits with
/// [`EXIT_STACK_OVERFLOW`]. Any other fault, on this thread or another,
/// goes on as one: the handler restores the default action and returns, so
/// that the fault kills the process with its signal.
///
/// Only this thread is checked. Threads the function spawns have no
/// alternate stack: an overflow there kills the process with `SIGSEGV`, as
/// before.
pub(crate) fn watch_overflows() {
    let Some((start, end)) = guard_region() else {
        return;
    };
    // SAFETY: an anonymous private mapping of our own, never unmapped: the
    // alternate stack lives as long as the process.
    let stack = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            ALT_STACK,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if stack == libc::MAP_FAILED {
        return;
    }
    let alt = libc::stack_t {
        ss_sp: stack,
        ss_flags: 0,
        ss_size: ALT_STACK,
    };
    // SAFETY: `alt` describes the mapping above, which stays.
    if unsafe { libc::sigaltstack(&raw const alt, std::ptr::null_mut()) } != 0 {
        return;
    }
    // SAFETY: gettid(2) has no preconditions.
    WATCHED.store(unsafe { libc::gettid() }, Ordering::Relaxed);
    GUARD_START.store(start, Ordering::Relaxed);
    GUARD_END.store(end, Ordering::Relaxed);
    let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) = on_fault;
    // SAFETY: a zeroed sigaction is valid; the handler makes only
    // async-signal-safe calls (see `on_fault`).
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler as libc::sighandler_t;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        libc::sigemptyset(&raw mut action.sa_mask);
        libc::sigaction(libc::SIGSEGV, &raw const action, std::ptr::null_mut());
        libc::sigaction(libc::SIGBUS, &raw const action, std::ptr::null_mut());
    }
}

/// The guard region of the calling thread's stack, as std finds it: the
/// page (or the thread's guard size, if larger) below the lowest address
/// of the stack, and for a thread of glibc's the guard size above it too
/// (glibc before 2.27 counted the guard in the stack). For the main thread
/// glibc reads the lowest address off the stack's resource limit: the
/// kernel grows the stack that far and faults below it.
fn guard_region() -> Option<(usize, usize)> {
    // SAFETY: a zeroed attribute object is what pthread_getattr_np fills;
    // it is destroyed once read.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &raw mut attr) != 0 {
            return None;
        }
        let mut bottom: *mut libc::c_void = std::ptr::null_mut();
        let mut size = 0;
        let mut guard = 0;
        let read = libc::pthread_attr_getstack(&raw const attr, &raw mut bottom, &raw mut size)
            == 0
            && libc::pthread_attr_getguardsize(&raw const attr, &raw mut guard) == 0;
        libc::pthread_attr_destroy(&raw mut attr);
        let page = usize::try_from(libc::sysconf(libc::_SC_PAGESIZE)).ok()?;
        let end = bottom as usize;
        (read && end != 0).then(|| {
            (
                end.saturating_sub(guard.max(page)),
                end.saturating_add(guard),
            )
        })
    }
}

/// The `SIGSEGV` and `SIGBUS` handler of [`watch_overflows`].
extern "C" fn on_fault(signal: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel hands a valid siginfo to an SA_SIGINFO handler;
    // gettid, write, _exit, sigaction and raise are async-signal-safe, and
    // the name is a `&'static str` that `running` published.
    unsafe {
        let info = &*info;
        // A positive code: the kernel raised it for a fault, and `si_addr`
        // is the faulting address (a process's `kill` has none).
        let fault = info.si_code > 0;
        let addr = info.si_addr() as usize;
        if fault
            && libc::gettid() == WATCHED.load(Ordering::Relaxed)
            && (GUARD_START.load(Ordering::Relaxed)..GUARD_END.load(Ordering::Relaxed))
                .contains(&addr)
        {
            report_overflow();
            libc::_exit(EXIT_STACK_OVERFLOW);
        }
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = libc::SIG_DFL;
        libc::sigemptyset(&raw mut action.sa_mask);
        libc::sigaction(signal, &raw const action, std::ptr::null_mut());
        if !fault {
            // Sent, not raised by an instruction: returning would not
            // repeat it. Pending until we return, then fatal.
            libc::raise(signal);
        }
    }
}

/// Writes std's line for an overflow, with the function's name, to
/// standard error: one `write(2)` of a line put together on this (the
/// alternate) stack, so that the lines of children that share standard
/// error do not mix.
fn report_overflow() {
    let len = NAME_LEN.load(Ordering::Acquire);
    let name = NAME.load(Ordering::Relaxed);
    let name: &[u8] = if name.is_null() || len == 0 {
        b"?"
    } else {
        // SAFETY: `running` stored the pointer and length of a
        // `&'static str`.
        unsafe { std::slice::from_raw_parts(name, len) }
    };
    let head: &[u8] = b"\nthread 'main' of pproc child `";
    let tail: &[u8] = b"` has overflowed its stack\n";
    let mut line = [0u8; 512];
    // A name too long for the line is cut.
    let name = &name[..name.len().min(line.len() - head.len() - tail.len())];
    let mut at = 0;
    for part in [head, name, tail] {
        line[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    }
    // SAFETY: write(2) reads the first `at` bytes of `line`.
    unsafe { libc::write(libc::STDERR_FILENO, line.as_ptr().cast(), at) };
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
pub(crate) fn tie_to_parent(parent: nix::unistd::Pid) -> bool {
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
