//! Detached children: one thread per process reaps them as they exit, so
//! that a child let go of with [`Handle::detach`](crate::Handle::detach)
//! leaves no zombie.
//!
//! The thread polls the pidfds of the children it holds and an eventfd by
//! which a new child wakes it. A child without a pidfd (kernels before
//! 5.3) is looked at on a tick. The thread and its eventfd are made on the
//! first detach and live as long as the process.

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::error::{Error, Result};
use crate::lock::lock;
use crate::process::child::Child;
use crate::wire::wait::Deadline;

/// How often a child without a pidfd is looked at.
const TICK: Duration = Duration::from_millis(50);

struct Reaper {
    /// The process whose thread serves `held`: a forked child has a copy
    /// of the state but not the thread.
    pid: u32,
    held: Mutex<Vec<Child>>,
    wake: EventFd,
}

impl Reaper {
    /// This process's reaper, started the first time.
    fn get() -> Result<&'static Self> {
        static REAPER: OnceLock<&'static Reaper> = OnceLock::new();
        static STARTING: Mutex<()> = Mutex::new(());
        if let Some(reaper) = REAPER.get() {
            return Self::ours(reaper);
        }
        let _starting = lock(&STARTING);
        if let Some(reaper) = REAPER.get() {
            return Self::ours(reaper);
        }
        let wake = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(|err| Error::Spawn(err.into()))?;
        let reaper: &'static Self = Box::leak(Box::new(Self {
            pid: std::process::id(),
            held: Mutex::new(Vec::new()),
            wake,
        }));
        std::thread::Builder::new()
            .name("pproc-reaper".into())
            .spawn(|| reaper.run())
            .map_err(Error::Spawn)?;
        let _ = REAPER.set(reaper);
        Ok(reaper)
    }

    /// `reaper`, if it is this process's: a forked child's copy has no
    /// thread, and the children it lists are not the child's.
    fn ours(reaper: &'static Self) -> Result<&'static Self> {
        if reaper.pid == std::process::id() {
            Ok(reaper)
        } else {
            Err(Error::Spawn(std::io::Error::other(
                "a forked child cannot detach a process: its parent's reaper has no thread here",
            )))
        }
    }

    fn held(&self) -> MutexGuard<'_, Vec<Child>> {
        lock(&self.held)
    }

    fn run(&self) {
        loop {
            self.reap();
            let held = self.held();
            let blind = held.iter().any(|child| child.exit_fd().is_none());
            // The descriptors outlive the lock: a child is only removed
            // by this thread.
            let raw: Vec<BorrowedFd<'_>> = held
                .iter()
                .filter_map(Child::exit_fd)
                // SAFETY: each pidfd belongs to a child in `held`, which only
                // this thread removes, after the poll below.
                .map(|fd| unsafe { BorrowedFd::borrow_raw(std::os::fd::AsRawFd::as_raw_fd(&fd)) })
                .collect();
            drop(held);
            let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(raw.len() + 1);
            fds.push(PollFd::new(self.wake.as_fd(), PollFlags::POLLIN));
            fds.extend(raw.iter().map(|fd| PollFd::new(*fd, PollFlags::POLLIN)));
            let timeout = if blind {
                PollTimeout::try_from(TICK).unwrap_or(PollTimeout::MAX)
            } else {
                PollTimeout::NONE
            };
            // An error (EINTR, ENOMEM) only means looking again.
            let _ = poll(&mut fds, timeout);
            let _ = self.wake.read();
        }
    }

    /// Reaps every held child that has exited. One that cannot be waited
    /// for at all (no such child) is let go of too.
    fn reap(&self) {
        let mut held = self.held();
        held.retain_mut(|child| matches!(child.wait(Deadline::Now), Err(Error::Timeout)));
    }
}

/// Hands `child` over to the reaper, which reaps it once it exits.
pub(crate) fn adopt(child: Child) -> Result<()> {
    let reaper = Reaper::get()?;
    reaper.held().push(child);
    reaper.wake.write(1).map_err(|err| Error::Io(err.into()))?;
    Ok(())
}
