//! What a child process sets up about itself before anything else runs:
//! dying with its parent, telling an out-of-memory abort from any other,
//! and surviving writes to closed pipes.

use crate::wire::frame::EXIT_OUT_OF_MEMORY;

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
