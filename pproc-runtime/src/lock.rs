//! The one way the runtime takes a lock.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// Locks `mutex`, taking it over from a thread that panicked while holding
/// it: every value the runtime keeps under a lock stays consistent between
/// statements, so a panic elsewhere does not make it unusable.
pub(crate) fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Waits on `ready` with `guard`, as [`lock`] does: poison is ignored.
pub(crate) fn wait<'a, T>(ready: &Condvar, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    ready.wait(guard).unwrap_or_else(PoisonError::into_inner)
}

/// Waits on `ready` with `guard` for at most `timeout`, as [`lock`] does:
/// poison is ignored. Whether it was woken or timed out, the guard is
/// held again on return.
pub(crate) fn wait_timeout<'a, T>(
    ready: &Condvar,
    guard: MutexGuard<'a, T>,
    timeout: Duration,
) -> MutexGuard<'a, T> {
    ready
        .wait_timeout(guard, timeout)
        .unwrap_or_else(PoisonError::into_inner)
        .0
}
