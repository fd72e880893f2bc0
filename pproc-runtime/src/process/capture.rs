//! Capturing a child's standard output and error, as
//! `std::process::Command::output` does.
//!
//! A thread drains both pipes as the child writes, so a chatty child never
//! blocks on a full pipe, whoever waits (or not) on its handle.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags};

use crate::error::{Error, Result};
use crate::lock::lock;
use crate::wire::wait::{Deadline, poll_until};

/// How long the output is awaited once the child has exited: a descendant
/// that inherited its standard streams may keep them open.
const GRACE: Duration = Duration::from_secs(1);

/// A close-on-exec pipe: (read end, write end).
pub(crate) fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|err| Error::Spawn(err.into()))
}

/// What was captured so far.
#[derive(Debug, Default)]
struct Captured {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    /// Both pipes reached their end (or failed).
    done: bool,
}

/// The parent's side of a captured child's output.
#[derive(Debug)]
pub(crate) struct Capture {
    shared: Arc<(Mutex<Captured>, Condvar)>,
}

impl Capture {
    /// Starts draining the read ends of the child's stdout and stderr.
    pub(crate) fn start(stdout: OwnedFd, stderr: OwnedFd) -> Result<Self> {
        let shared: Arc<(Mutex<Captured>, Condvar)> = Arc::default();
        let drain = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("pproc-capture".into())
            .spawn(move || {
                drain_both(&stdout, &stderr, &drain.0);
                // Closed before the output is handed over, so that no
                // descriptor outlives `finish`.
                drop((stdout, stderr));
                lock(&drain.0).done = true;
                drain.1.notify_all();
            })
            .map_err(Error::Spawn)?;
        Ok(Self { shared })
    }

    /// Waits until both pipes are closed, at most the grace period, and
    /// takes what they carried.
    pub(crate) fn finish(self) -> (Vec<u8>, Vec<u8>) {
        let (state, ended) = &*self.shared;
        let captured = lock(state);
        let (mut captured, _) = ended
            .wait_timeout_while(captured, GRACE, |c| !c.done)
            .unwrap_or_else(PoisonError::into_inner);
        (
            std::mem::take(&mut captured.stdout),
            std::mem::take(&mut captured.stderr),
        )
    }
}

/// Reads both pipes into `captured` until both are closed.
fn drain_both(stdout: &OwnedFd, stderr: &OwnedFd, captured: &Mutex<Captured>) {
    let mut open = [true, true];
    let mut buf = vec![0; 64 * 1024];
    while open.iter().any(|o| *o) {
        let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(2);
        let mut which = Vec::with_capacity(2);
        for (i, fd) in [stdout, stderr].into_iter().enumerate() {
            if open[i] {
                fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
                which.push(i);
            }
        }
        if poll_until(&mut fds, Deadline::Never).is_err() {
            return;
        }
        let ready: Vec<usize> = fds
            .iter()
            .zip(&which)
            .filter(|(fd, _)| fd.revents().is_some_and(|r| !r.is_empty()))
            .map(|(_, i)| *i)
            .collect();
        for i in ready {
            let fd = if i == 0 { stdout } else { stderr };
            match nix::unistd::read(fd, &mut buf) {
                Ok(0) | Err(Errno::EBADF | Errno::EIO) => open[i] = false,
                Ok(n) => {
                    let mut captured = lock(captured);
                    let sink = if i == 0 {
                        &mut captured.stdout
                    } else {
                        &mut captured.stderr
                    };
                    sink.extend_from_slice(&buf[..n]);
                }
                Err(Errno::EINTR | Errno::EAGAIN) => {}
                Err(_) => open[i] = false,
            }
        }
    }
}
