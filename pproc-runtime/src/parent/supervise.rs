//! Joining many children: all of them under one deadline (concurrence's
//! `join_all`), or whichever finishes first.

use std::os::fd::BorrowedFd;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags};
use serde::de::DeserializeOwned;

use super::handle::{Exit, Handle};
use crate::error::{Error, Result};
use crate::wire::wait::{Deadline, poll_until};

/// Waits for every child and returns their results in the handles' order,
/// each `Ok` or its own `Err` (concurrence's `join_all`).
///
/// If `timeout` (`None`: as long as it takes) passes first, every child
/// that has finished still gives its result, and each one still running
/// is killed (with its process group) and reaped, and gives
/// [`Error::Timeout`] in its place. Nothing is left running when this
/// returns.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use pproc::{parallel, Error};
///
/// #[parallel]
/// fn check(n: u32) -> u32 {
///     assert!(n != 3, "3 is not allowed");
///     if n == 4 {
///         std::thread::sleep(Duration::from_secs(600));
///     }
///     n * 2
/// }
///
/// # fn main() -> pproc::Result<()> {
/// let handles = (1..=4).map(check::start).collect::<pproc::Result<Vec<_>>>()?;
/// let results = pproc::join_all(handles, Some(Duration::from_secs(5)));
/// assert_eq!(results.len(), 4);
/// assert_eq!(results[0].as_ref().ok(), Some(&2));
/// assert!(matches!(results[2], Err(Error::Panicked { .. })));
/// // The straggler was killed at the deadline.
/// assert!(matches!(results[3], Err(Error::Timeout)));
/// # Ok(())
/// # }
/// ```
pub fn join_all<R, S, V, K>(
    handles: impl IntoIterator<Item = Handle<R, S, V, K>>,
    timeout: Option<Duration>,
) -> Vec<Result<R>>
where
    R: DeserializeOwned,
{
    let deadline = timeout.map_or(Deadline::Never, Deadline::after);
    let mut handles: Vec<_> = handles.into_iter().collect();
    // Once the deadline has passed, each later child is only looked at:
    // one that has finished still gives its result.
    let results = handles
        .iter_mut()
        .map(|handle| handle.join_until(deadline).unwrap_or(Err(Error::Timeout)))
        .collect();
    // Dropping the handles kills and reaps the stragglers, before the
    // results are handed over.
    drop(handles);
    results
}

/// Waits until one of the children has finished, and returns its index;
/// every handle stays usable (join the finished one without waiting).
/// `timeout` of `None` waits as long as it takes.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use pproc::parallel;
///
/// #[parallel]
/// fn nap(ms: u64) -> u64 {
///     std::thread::sleep(Duration::from_millis(ms));
///     ms
/// }
///
/// # fn main() -> pproc::Result<()> {
/// let mut handles = vec![nap::start(60_000)?, nap::start(0)?];
/// let first = pproc::select(&handles, None)?;
/// assert_eq!(first, 1);
/// assert_eq!(handles.remove(first).join()?, 0);
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// [`Error::Timeout`] if none finished in time; [`Error::Io`] for an empty
/// slice, or if polling fails.
pub fn select<R, S, V, K>(
    handles: &[Handle<R, S, V, K>],
    timeout: Option<Duration>,
) -> Result<usize> {
    if handles.is_empty() {
        return Err(Error::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "select needs at least one handle",
        )));
    }
    let deadline = timeout.map_or(Deadline::Never, Deadline::after);
    loop {
        if let Some(&first) = wait_exits(handles, None, deadline)?.done.first() {
            return Ok(first);
        }
        if deadline.passed() {
            return Err(Error::Timeout);
        }
    }
}

/// Waits until one of the children has finished, takes its handle out of
/// `handles` and returns its index there with its result; the others stay
/// in `handles`, in their order.
///
/// # Errors
///
/// As [`select`].
pub fn join_any<R, S, V, K>(
    handles: &mut Vec<Handle<R, S, V, K>>,
    timeout: Option<Duration>,
) -> Result<(usize, Result<R>)>
where
    R: DeserializeOwned,
{
    let i = select(handles, timeout)?;
    Ok((i, handles.remove(i).join()))
}

/// What [`wait_exits`] saw.
pub(crate) struct Exits {
    /// The indices of the children that have finished.
    pub(crate) done: Vec<usize>,
    /// Whether the `wake` descriptor became readable.
    pub(crate) woken: bool,
}

/// Waits until a child among `handles` has exited, `wake` is readable, or
/// `deadline` passes; children without a pidfd are checked every [`BLIND_TICK`](crate::wire::wait::BLIND_TICK),
/// so `done` may come back empty before the deadline. A child that cannot
/// be waited for counts as finished: joining it reports why.
pub(crate) fn wait_exits<R, S, V, K>(
    handles: &[Handle<R, S, V, K>],
    wake: Option<BorrowedFd<'_>>,
    deadline: Deadline,
) -> Result<Exits> {
    let mut fds: Vec<PollFd<'_>> = wake
        .iter()
        .map(|fd| PollFd::new(*fd, PollFlags::POLLIN))
        .collect();
    let mut owners = Vec::with_capacity(handles.len());
    let mut done = Vec::new();
    let mut blind = false;
    for (i, handle) in handles.iter().enumerate() {
        match handle.exit_state() {
            Ok(Exit::Done) | Err(_) => done.push(i),
            Ok(Exit::Fd(fd)) => {
                fds.push(PollFd::new(fd, PollFlags::POLLIN));
                owners.push(i);
            }
            Ok(Exit::Blind) => blind = true,
        }
    }
    if !done.is_empty() {
        return Ok(Exits { done, woken: false });
    }
    let wait = if blind { deadline.or_tick() } else { deadline };
    if !poll_until(&mut fds, wait)? {
        return Ok(Exits { done, woken: false });
    }
    let ready = |fd: &PollFd<'_>| fd.revents().is_some_and(|r| !r.is_empty());
    let skip = usize::from(wake.is_some());
    let woken = wake.is_some() && ready(&fds[0]);
    done.extend(
        fds[skip..]
            .iter()
            .zip(&owners)
            .filter(|(fd, _)| ready(fd))
            .map(|(_, i)| *i),
    );
    Ok(Exits { done, woken })
}
