//! A shared lock, reentrant or not, held by the proxy that acquired it.
//! Condition variables take their lock's operations too ([`locking!`]).

use serde::{Deserialize, Serialize};

use super::{CallResult, Caller, ClientId, Fault, ObjectOp, ServerObject, Watched, done, Table};
use crate::manager::client::{Proxy, proxy_type};

/// What a shared lock does, for the client that asks. Timeouts are in
/// milliseconds; `None` waits as long as it takes.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub(crate) enum LockOp {
    Acquire { timeout_ms: Option<u64> },
    Release,
}

/// What creating a lock takes.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub(crate) struct NewLock {
    /// Whether the client that holds it may take it again.
    pub(crate) reentrant: bool,
}

proxy_type!(
    /// A shared lock, reentrant or not
    /// ([`Manager::lock`](crate::manager::Manager::lock),
    /// [`Manager::rlock`](crate::manager::Manager::rlock)). It is held by
    /// the proxy that acquired it; if that proxy's process dies, the lock is
    /// given back.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> pproc::Result<()> {
    /// let manager = pproc::Manager::start()?;
    /// let (lock, total) = (manager.lock()?, manager.value(&0_u32)?);
    /// {
    ///     let _held = lock.lock()?; // every other proxy waits here
    ///     let seen = total.get()?;
    ///     total.set(&(seen + 1))?;
    /// }
    /// assert_eq!(total.get()?, 1);
    /// lock.acquire()?;
    /// assert!(lock.acquire().is_err(), "not reentrant: see `Manager::rlock`");
    /// # Ok(())
    /// # }
    /// ```
    Lock
);

/// Holds a shared [`Lock`] (or a [`Condition`](crate::manager::Condition)'s
/// lock) until dropped.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// # fn main() -> pproc::Result<()> {
/// let manager = pproc::Manager::start()?;
/// let lock = manager.lock()?;
/// let other = lock.clone(); // another proxy: another holder
/// let guard = lock.lock()?;
/// assert!(!other.acquire_timeout(Duration::from_millis(10))?, "held by `lock`");
/// drop(guard); // releases it
/// assert!(other.acquire_timeout(Duration::from_secs(10))?);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
#[must_use = "the lock is released when the guard is dropped"]
pub struct Guard<'a> {
    proxy: &'a Proxy,
    /// What releases the lock, as the object's kind says it.
    release: ObjectOp,
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        // If the manager is gone, so is the lock.
        let _ = self.proxy.ask::<()>(self.release.clone());
    }
}

/// `acquire`, `release` and `lock` for proxies of lock-like objects, whose
/// kind's operations take a lock's as `$wrap` makes them.
macro_rules! locking {
    ($name:ident, $wrap:expr) => {
        impl $name {
            /// A lock operation, as this kind takes it.
            fn lock_op(
                op: $crate::manager::objects::lock::LockOp,
            ) -> $crate::manager::objects::ObjectOp {
                ($wrap)(op)
            }

            /// Waits until the lock is free and takes it.
            ///
            /// # Errors
            ///
            /// [`Error::Remote`](crate::Error::Remote) if this proxy holds a
            /// non-reentrant lock already, or as
            /// [`Map::insert`](crate::manager::Map::insert).
            pub fn acquire(&self) -> $crate::error::Result<()> {
                self.proxy.ask(Self::lock_op(
                    $crate::manager::objects::lock::LockOp::Acquire { timeout_ms: None },
                ))
            }

            /// Waits at most `timeout` for the lock; whether it was taken.
            ///
            /// # Errors
            ///
            /// As [`acquire`](Self::acquire).
            pub fn acquire_timeout(
                &self,
                timeout: ::std::time::Duration,
            ) -> $crate::error::Result<bool> {
                $crate::manager::client::in_time(self.proxy.ask(Self::lock_op(
                    $crate::manager::objects::lock::LockOp::Acquire {
                        timeout_ms: $crate::manager::client::millis(Some(timeout)),
                    },
                )))
            }

            /// Releases the lock (once, for a reentrant one).
            ///
            /// # Errors
            ///
            /// [`Error::Remote`](crate::Error::Remote) if this proxy does not
            /// hold it, or as [`Map::insert`](crate::manager::Map::insert).
            pub fn release(&self) -> $crate::error::Result<()> {
                self.proxy.ask(Self::lock_op(
                    $crate::manager::objects::lock::LockOp::Release,
                ))
            }

            /// Takes the lock and returns a guard that releases it.
            ///
            /// # Errors
            ///
            /// As [`acquire`](Self::acquire).
            pub fn lock(&self) -> $crate::error::Result<$crate::manager::Guard<'_>> {
                self.acquire()?;
                Ok($crate::manager::objects::lock::Guard::new(
                    &self.proxy,
                    Self::lock_op($crate::manager::objects::lock::LockOp::Release),
                ))
            }
        }
    };
}

pub(super) use locking;

locking!(Lock, ObjectOp::Lock);

impl<'a> Guard<'a> {
    /// A guard over the lock that `release` releases.
    pub(super) fn new(proxy: &'a Proxy, release: ObjectOp) -> Self {
        Self { proxy, release }
    }
}

/// Who holds a lock, how many times.
#[derive(Default)]
pub(super) struct Ownership {
    pub(super) owner: Option<ClientId>,
    pub(super) count: u64,
}

/// A lock in the server.
pub(crate) struct LockState {
    pub(super) ownership: Watched<Ownership>,
    reentrant: bool,
}

impl LockState {
    /// A lock that no one holds.
    pub(super) fn new(reentrant: bool) -> Self {
        Self {
            ownership: Watched::default(),
            reentrant,
        }
    }
}

impl ServerObject for LockState {
    const NAME: &'static str = "lock";
    type New = NewLock;
    type Op = LockOp;

    fn build(new: NewLock, _: &Table) -> Result<Self, String> {
        Ok(Self::new(new.reentrant))
    }

    fn call(&self, op: LockOp, caller: &Caller<'_>) -> CallResult {
        match op {
            LockOp::Acquire { timeout_ms } => {
                let mut state = self.ownership.wait(caller, timeout_ms, |s| {
                    s.owner.is_none() || s.owner == Some(caller.id)
                })?;
                if state.owner == Some(caller.id) {
                    if !self.reentrant {
                        return Err(Fault::Message(
                            "this proxy holds the lock already (a `Lock` is not reentrant; use an `RLock`)".into(),
                        ));
                    }
                    state.count += 1;
                } else {
                    state.owner = Some(caller.id);
                    state.count = 1;
                }
                done(&())
            }
            LockOp::Release => {
                let mut state = self.ownership.lock();
                if state.owner != Some(caller.id) {
                    return Err(Fault::Message(
                        "release of a lock this proxy does not hold".into(),
                    ));
                }
                state.count -= 1;
                if state.count == 0 {
                    state.owner = None;
                    self.ownership.notify();
                }
                done(&())
            }
        }
    }

    fn release(&self, client: ClientId) {
        let mut state = self.ownership.lock();
        if state.owner == Some(client) {
            state.owner = None;
            state.count = 0;
            self.ownership.notify();
        }
    }
}
