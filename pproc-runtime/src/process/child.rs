//! A started child process as the OS knows it: waiting for it (by pidfd
//! where there is one), signalling it and its group, reaping it, and the
//! error its end stands for. A child on another host is known through its
//! host's link instead ([`RemoteEnd`]).

use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use nix::unistd::Pid;

use super::{tree, watchdog};
use crate::error::{Error, Result};
use crate::wire::wait::{BLIND_TICK, Deadline, poll_until};

/// How the child process ended.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Status {
    Exited(i32),
    Signaled(i32),
    /// The kernel reaped it before we could: the program ignores
    /// `SIGCHLD` (`SIG_IGN`), so how it ended is not known.
    Unknown,
    /// It ran on another host, which was lost before its end was known.
    Lost,
}

impl From<Status> for Error {
    fn from(status: Status) -> Self {
        match status {
            Status::Exited(code) => Self::Exited { code },
            Status::Signaled(signal) => Self::Signaled { signal },
            Status::Unknown => Self::Disconnected,
            // The caller names the host (see `Child::host`).
            Status::Lost => Self::HostLost {
                host: String::new(),
            },
        }
    }
}

/// A child on another host, as the link to its host's agent knows it.
pub(crate) trait RemoteEnd: fmt::Debug + Send + Sync {
    /// The host, as its launcher names it.
    fn host(&self) -> &str;
    /// A descriptor that is readable once the child's end is known.
    fn exit_fd(&self) -> BorrowedFd<'_>;
    /// How it ended, once that is known: [`Status::Lost`] if its host was
    /// lost first.
    fn status(&self) -> Option<Status>;
    /// Asks the agent to send `signal` to the child (and its group).
    fn signal(&self, signal: Signal) -> Result<()>;
    /// Whether its deadline killed it, as the agent saw.
    fn expired(&self) -> bool;
}

/// The process itself: waited for once, killed on drop if still running.
#[derive(Debug)]
pub(crate) struct Child {
    pub(crate) pid: Pid,
    pub(crate) pidfd: Option<Arc<OwnedFd>>,
    pub(crate) status: Option<Status>,
    /// The child leads its own process group: signals go to the group.
    pub(crate) group: bool,
    /// Its deadline, while it is watched.
    pub(crate) ticket: Option<watchdog::Ticket>,
    /// Where it runs on another host: `pid` is its pid there.
    remote: Option<Arc<dyn RemoteEnd>>,
}

impl Child {
    /// A started child, not yet reaped, in the parent's group until told
    /// otherwise.
    pub(crate) fn new(pid: Pid, pidfd: Option<Arc<OwnedFd>>) -> Self {
        Self {
            pid,
            pidfd,
            status: None,
            group: false,
            ticket: None,
            remote: None,
        }
    }

    /// A child that runs on another host as `pid`, known through `end`.
    pub(crate) fn remote(pid: Pid, end: Arc<dyn RemoteEnd>) -> Self {
        let mut child = Self::new(pid, None);
        child.remote = Some(end);
        child
    }

    /// The host it runs on, where that is another one.
    pub(crate) fn host(&self) -> Option<&str> {
        self.remote.as_deref().map(RemoteEnd::host)
    }

    pub(crate) fn exit_fd(&self) -> Option<BorrowedFd<'_>> {
        if self.status.is_some() {
            return None;
        }
        if let Some(end) = &self.remote {
            return Some(end.exit_fd());
        }
        self.pidfd.as_deref().map(AsFd::as_fd)
    }

    /// Waits until the process has exited, without reaping it. Returns
    /// `false` on timeout.
    pub(crate) fn wait_exited(&self, deadline: Deadline) -> Result<bool> {
        if self.status.is_some() {
            return Ok(true);
        }
        if let Some(end) = &self.remote {
            let mut fds = [PollFd::new(end.exit_fd(), PollFlags::POLLIN)];
            return poll_until(&mut fds, deadline);
        }
        if let Some(pidfd) = &self.pidfd {
            let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
            return poll_until(&mut fds, deadline);
        }
        // No pidfd (kernels before 5.3): poll with a growing pause.
        let mut pause = Duration::from_micros(100);
        loop {
            let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
            match waitid(Id::Pid(self.pid), flags) {
                // Reaped by the kernel: the program ignores `SIGCHLD`.
                Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) | Err(Errno::ECHILD) => {
                    return Ok(true);
                }
                Err(Errno::EINTR) | Ok(_) => {}
                Err(err) => return Err(Error::from_errno(err)),
            }
            let now = Instant::now();
            match deadline {
                Deadline::Now => return Ok(false),
                Deadline::At(at) if now >= at => return Ok(false),
                Deadline::At(at) => std::thread::sleep(pause.min(at - now)),
                Deadline::Never => std::thread::sleep(pause),
            }
            pause = (pause * 2).min(BLIND_TICK);
        }
    }

    /// Waits for the process to exit and reaps it.
    pub(crate) fn wait(&mut self, deadline: Deadline) -> Result<Status> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        if !self.wait_exited(deadline)? {
            return Err(Error::Timeout);
        }
        if let Some(end) = &self.remote {
            // Its host's agent reaped it: this is what the agent saw.
            return Ok(*self.status.insert(end.status().unwrap_or(Status::Lost)));
        }
        // The watchdog must not signal a pid that we are about to free.
        if let Some(ticket) = &self.ticket {
            ticket.cancel();
        }
        // Reaped with the registry locked: a pid listed there is always an
        // unreaped child of ours.
        let mut live = tree::live();
        loop {
            match waitid(Id::Pid(self.pid), WaitPidFlag::WEXITED) {
                Ok(WaitStatus::Exited(_, code)) => {
                    live.remove(&self.pid.as_raw());
                    return Ok(*self.status.insert(Status::Exited(code)));
                }
                Ok(WaitStatus::Signaled(_, signal, _)) => {
                    live.remove(&self.pid.as_raw());
                    return Ok(*self.status.insert(Status::Signaled(signal as i32)));
                }
                Err(Errno::ECHILD) => {
                    // The program ignores `SIGCHLD`: the kernel reaped the
                    // child as it exited, and its status is gone.
                    live.remove(&self.pid.as_raw());
                    return Ok(*self.status.insert(Status::Unknown));
                }
                Err(Errno::EINTR) | Ok(_) => {}
                Err(err) => return Err(Error::from_errno(err)),
            }
        }
    }

    /// Sends `signal` to the child, and to its process group if it leads
    /// one. Does nothing once it has been reaped.
    pub(crate) fn signal(&self, signal: Signal) -> Result<()> {
        if self.status.is_some() {
            return Ok(());
        }
        if let Some(end) = &self.remote {
            return end.signal(signal);
        }
        // While the process is not reaped, its pid, and the group id it
        // holds, cannot have been reused. A program that ignores `SIGCHLD`
        // has its children reaped by the kernel as they exit: then the
        // pidfd still names the child alone, and its group is signalled
        // only while the child is known to be unreaped.
        if self.group && self.unreaped() {
            let _ = nix::sys::signal::killpg(self.pid, signal);
        }
        let sent = match &self.pidfd {
            Some(pidfd) => watchdog::pidfd_send_signal(pidfd, signal as libc::c_int)
                .map_err(|err| Errno::from_raw(err.raw_os_error().unwrap_or(0))),
            None if self.unreaped() => kill(self.pid, signal),
            None => Ok(()),
        };
        match sent {
            Ok(()) | Err(Errno::ESRCH) => Ok(()),
            Err(err) => Err(Error::from_errno(err)),
        }
    }

    /// Whether the process is still ours to signal: running, or exited
    /// and not reaped (by us, or by the kernel for a program that ignores
    /// `SIGCHLD`).
    fn unreaped(&self) -> bool {
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        !matches!(waitid(Id::Pid(self.pid), flags), Err(Errno::ECHILD))
    }

    pub(crate) fn kill(&self) -> Result<()> {
        self.signal(Signal::SIGKILL)
    }

    /// `SIGTERM`, then `SIGKILL` once `grace` has passed; descendants left
    /// in the child's group are killed as it exits. Reaps the child.
    pub(crate) fn terminate(&mut self, grace: Duration) -> Result<Status> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        self.signal(Signal::SIGTERM)?;
        let exited = self.wait_exited(Deadline::after(grace))?;
        // Exited or not, nothing of the tree is left running: the group id
        // is still held by the unreaped child.
        if !exited || self.group {
            self.signal(Signal::SIGKILL)?;
        }
        self.wait(Deadline::Never)
    }

    /// Whether its deadline killed it.
    pub(crate) fn expired(&self) -> bool {
        if let Some(end) = &self.remote {
            return end.expired();
        }
        self.ticket.as_ref().is_some_and(watchdog::Ticket::expired)
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.kill();
            let _ = self.wait(Deadline::Never);
        }
        if let Some(ticket) = &self.ticket {
            ticket.cancel();
        }
    }
}
