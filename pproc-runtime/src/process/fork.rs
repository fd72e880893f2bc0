//! Forking the running program, for a child that runs a closure
//! ([`Exchange::create`](crate::Exchange::create)) instead of a registered
//! function.

use std::io::Write;
use std::os::fd::OwnedFd;

use super::setup::{Thread, tie_to_parent, watch_aborts, watch_overflows};
use super::spawn::Spawned;
use super::tree;
use crate::error::{Error, Result};
use crate::wire::conn::socketpair;
use crate::wire::frame::EXIT_PROTOCOL;

/// Forks a child that runs `body` with its end of a new socketpair and
/// leaves with `_exit` and the status `body` returns, so that no destructor
/// of the parent's state runs twice; returns the parent's end and the
/// child. The child leads a process group of its own when `group` is set,
/// and dies with its parent.
///
/// # Safety
///
/// As `fork` in a program that may have other threads: in the child,
/// `body` must not need a lock that another thread of the parent held (see
/// [`Exchange::create`](crate::Exchange::create)).
pub(crate) unsafe fn fork(
    group: bool,
    body: impl FnOnce(OwnedFd) -> i32,
) -> Result<(OwnedFd, Spawned)> {
    let (ours, theirs) = socketpair()?;
    let parent = nix::unistd::getpid();
    // The child's one thread is this one: the process's initial thread, or
    // one that was started.
    let thread = Thread::current();
    // Anything buffered now would be written twice, once by each process.
    let _ = std::io::stdout().flush();
    // SAFETY: the caller upholds fork's contract; the child below only
    // runs `body` and leaves with `_exit`.
    match unsafe { nix::unistd::fork() }.map_err(|err| Error::Spawn(err.into()))? {
        nix::unistd::ForkResult::Parent { child } => {
            if group {
                // Both sides set the group, so that it exists before either
                // goes on (the child may not have run yet). Fails only if
                // the child has done it already, or died.
                let _ = nix::unistd::setpgid(child, child);
            }
            drop(theirs);
            Ok((ours, Spawned::new(child)))
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
            tree::set_parent(parent.as_raw());
            watch_aborts();
            watch_overflows(thread);
            let code = if tie_to_parent(parent) {
                body(theirs)
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
