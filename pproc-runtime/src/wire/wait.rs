//! Deadlines, and waiting on descriptors until one.

use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollTimeout, poll};

use crate::error::{Error, Result};

/// How often a wait looks at children that have no pidfd (kernels before
/// 5.3): their exit cannot be polled, so the wait wakes this often.
pub(crate) const BLIND_TICK: Duration = Duration::from_millis(10);

/// When a blocking operation gives up.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Deadline {
    /// Wait as long as it takes.
    Never,
    /// Do not wait at all.
    Now,
    /// Wait until this instant.
    At(Instant),
}

impl Deadline {
    pub(crate) fn after(timeout: Duration) -> Self {
        Instant::now()
            .checked_add(timeout)
            .map_or(Self::Never, Self::At)
    }

    /// Whether a wait with this deadline is over: always for `Now`, never
    /// for `Never`.
    pub(crate) fn passed(self) -> bool {
        match self {
            Self::Never => false,
            Self::Now => true,
            Self::At(at) => Instant::now() >= at,
        }
    }

    /// This deadline, or one [`BLIND_TICK`] from now if that comes first:
    /// for a wait that also looks at children without a pidfd.
    pub(crate) fn or_tick(self) -> Self {
        match (self, Self::after(BLIND_TICK)) {
            (Self::Now, _) => Self::Now,
            (Self::At(at), Self::At(tick)) if at <= tick => self,
            (_, tick) => tick,
        }
    }

    pub(crate) fn poll_timeout(self) -> Option<PollTimeout> {
        match self {
            Self::Never => Some(PollTimeout::NONE),
            Self::Now => Some(PollTimeout::ZERO),
            Self::At(at) => {
                let left = at.checked_duration_since(Instant::now())?;
                // Round up, so that a wait never ends before its deadline.
                let millis = left.as_nanos().div_ceil(1_000_000);
                Some(PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX))
            }
        }
    }
}

/// Polls `fds` until one is ready or the deadline passes, retrying `EINTR`.
/// Returns `false` on timeout.
///
/// A deadline that has passed still looks once, without waiting: what is
/// ready by then counts, as for [`Deadline::Now`].
pub(crate) fn poll_until(fds: &mut [PollFd<'_>], deadline: Deadline) -> Result<bool> {
    loop {
        let (timeout, last) = match deadline.poll_timeout() {
            Some(timeout) => (timeout, matches!(deadline, Deadline::Now)),
            None => (PollTimeout::ZERO, true),
        };
        match poll(fds, timeout) {
            Ok(0) if last => return Ok(false),
            Ok(0) | Err(Errno::EINTR) => {}
            Ok(_) => return Ok(true),
            Err(err) => return Err(Error::from_errno(err)),
        }
    }
}
