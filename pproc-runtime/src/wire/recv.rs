//! The receive family that [`Channel`](crate::Channel) and
//! [`Handle`](crate::Handle) share: timeouts as `None`, batches, and the
//! iterator over received values.

use std::fmt;
use std::time::Duration;

use super::wait::Deadline;
use crate::error::{Error, Result};

/// `Ok(None)` for a timeout.
pub(crate) fn optional<V>(result: Result<V>) -> Result<Option<V>> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(Error::Timeout) => Ok(None),
        Err(err) => Err(err),
    }
}

/// concurrence's `receive_batch`: the first value with no deadline, then up
/// to `timeout` to fill the batch. An error after the first value ends the
/// batch and goes to `defer`.
pub(crate) fn batch<V>(
    max: usize,
    timeout: Duration,
    mut next: impl FnMut(Deadline) -> Result<V>,
    defer: impl FnOnce(Error),
) -> Result<Vec<V>> {
    let mut out = Vec::new();
    if max == 0 {
        return Ok(out);
    }
    out.push(next(Deadline::Never)?);
    let deadline = Deadline::after(timeout);
    while out.len() < max {
        match next(deadline) {
            Ok(value) => out.push(value),
            Err(Error::Timeout) => break,
            Err(err) => {
                defer(err);
                break;
            }
        }
    }
    Ok(out)
}

/// An iterator over the values received on a channel or a handle.
///
/// It ends when the other side is done sending ([`Error::Disconnected`]),
/// and after yielding any other error but [`Error::Remote`], an error sent in
/// place of a value, after which it goes on.
///
/// # Examples
///
/// ```
/// use pproc::{parallel, Channel};
///
/// #[parallel]
/// fn parse(ch: Channel<u32>, words: Vec<String>) {
///     for word in words {
///         match word.parse::<u32>() {
///             Ok(n) => ch.send(&n).unwrap(),
///             Err(err) => ch.send_error(err).unwrap(), // in place of a value
///         }
///     }
/// }
///
/// # fn main() -> pproc::Result<()> {
/// let h = parse::start(vec!["1".into(), "x".into(), "3".into()])?;
/// let items: Vec<pproc::Result<u32>> = h.iter().collect();
/// assert_eq!(items.len(), 3); // it went on after the error, then ended
/// assert_eq!(items[0].as_ref().ok(), Some(&1));
/// assert!(items[1].as_ref().is_err_and(|err| err.is_remote()));
/// assert_eq!(items[2].as_ref().ok(), Some(&3));
/// h.join()?;
/// # Ok(())
/// # }
/// ```
pub struct Iter<'a, V> {
    next: Box<dyn FnMut() -> Result<V> + 'a>,
    done: bool,
}

impl<'a, V> Iter<'a, V> {
    pub(crate) fn new(next: impl FnMut() -> Result<V> + 'a) -> Self {
        Self {
            next: Box::new(next),
            done: false,
        }
    }
}

impl<V> Iterator for Iter<'_, V> {
    type Item = Result<V>;

    fn next(&mut self) -> Option<Result<V>> {
        if self.done {
            return None;
        }
        match (self.next)() {
            Ok(value) => Some(Ok(value)),
            Err(Error::Disconnected) => {
                self.done = true;
                None
            }
            // An error sent in place of a value: the stream goes on.
            Err(err @ Error::Remote { .. }) => Some(Err(err)),
            Err(err) => {
                self.done = true;
                Some(Err(err))
            }
        }
    }
}

impl<V> std::iter::FusedIterator for Iter<'_, V> {}

impl<V> fmt::Debug for Iter<'_, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Iter")
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}
