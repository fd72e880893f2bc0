//! Deadlines: one thread per process kills children whose wall-clock
//! deadline has passed, whether or not anyone waits on their handles.
//!
//! It signals through a duplicate of each child's pidfd, which names that
//! process and no other even after its pid is reused. A handle cancels its
//! watch before it reaps the child, so the watchdog never signals a pid or
//! a group that is no longer the child's.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::unistd::Pid;

use crate::error::{Error, Result};
use crate::lock::{lock, wait_timeout};

/// A child being watched.
struct Watch {
    at: Instant,
    pidfd: OwnedFd,
    pid: Pid,
    group: bool,
    expired: Arc<AtomicBool>,
}

#[derive(Default)]
struct Watchdog {
    /// Watches by id.
    watches: BTreeMap<u64, Watch>,
    next: u64,
    /// The process whose thread serves these watches: a forked child has
    /// a copy of the state but not the thread.
    owner: Option<u32>,
}

static STATE: Mutex<Watchdog> = Mutex::new(Watchdog {
    watches: BTreeMap::new(),
    next: 0,
    owner: None,
});
static WAKE: Condvar = Condvar::new();

fn state() -> MutexGuard<'static, Watchdog> {
    lock(&STATE)
}

/// A child's watch: the flag says whether its deadline killed it.
#[derive(Debug)]
pub(crate) struct Ticket {
    id: u64,
    expired: Arc<AtomicBool>,
}

impl Ticket {
    /// Whether the deadline passed and the child was killed for it.
    pub(crate) fn expired(&self) -> bool {
        self.expired.load(Ordering::Acquire)
    }

    /// Stops watching. After this returns the watchdog sends nothing more.
    pub(crate) fn cancel(&self) {
        state().watches.remove(&self.id);
    }
}

/// Kills the child behind `pidfd` (and its group, with `group`) at `at`.
pub(crate) fn watch(pidfd: BorrowedFd<'_>, pid: Pid, group: bool, at: Instant) -> Result<Ticket> {
    let pidfd = pidfd.try_clone_to_owned().map_err(Error::Io)?;
    let expired = Arc::new(AtomicBool::new(false));
    let mut state = state();
    let me = std::process::id();
    if state.owner != Some(me) {
        std::thread::Builder::new()
            .name("pproc-watchdog".into())
            .spawn(serve)
            .map_err(Error::Spawn)?;
        // Watches copied from a parent by fork are not ours to serve.
        std::mem::forget(std::mem::take(&mut state.watches));
        state.owner = Some(me);
    }
    let id = state.next;
    state.next += 1;
    state.watches.insert(
        id,
        Watch {
            at,
            pidfd,
            pid,
            group,
            expired: Arc::clone(&expired),
        },
    );
    WAKE.notify_all();
    Ok(Ticket { id, expired })
}

/// The watchdog thread: sleeps until the next deadline, kills what is due.
fn serve() {
    let mut state = state();
    loop {
        let now = Instant::now();
        let due: Vec<u64> = state
            .watches
            .iter()
            .filter(|(_, w)| w.at <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            if let Some(watch) = state.watches.remove(&id)
                && !has_exited(&watch.pidfd)
            {
                // Under the lock: a handle that cancels waits for this, so
                // the child cannot be reaped in between.
                watch.expired.store(true, Ordering::Release);
                kill(&watch);
            }
        }
        let next = state.watches.values().map(|w| w.at).min();
        state = match next {
            Some(at) => {
                let wait = at.saturating_duration_since(Instant::now());
                wait_timeout(&WAKE, state, wait)
            }
            None => crate::lock::wait(&WAKE, state),
        };
    }
}

/// Whether the child has exited already (on its own, before its deadline).
fn has_exited(pidfd: &OwnedFd) -> bool {
    let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
}

/// Sends `SIGKILL` to the child's group (while the child, not reaped,
/// still holds the group id) and to the child itself.
fn kill(watch: &Watch) {
    if watch.group {
        let _ = nix::sys::signal::killpg(watch.pid, nix::sys::signal::Signal::SIGKILL);
    }
    let _ = pidfd_send_signal(&watch.pidfd, libc::SIGKILL);
}

/// Signals the process a pidfd refers to: never another process that
/// reused its pid.
pub(crate) fn pidfd_send_signal(pidfd: &OwnedFd, signal: libc::c_int) -> io::Result<()> {
    // SAFETY: pidfd_send_signal takes a pidfd, a signal, a null siginfo and
    // no flags; nix has no wrapper for it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
