//! A shared semaphore, bounded or not; what a client holds is given back
//! when it goes away.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{CallResult, Caller, ClientId, Fault, ServerObject, Watched, done, Table};
use crate::error::Result;
use crate::manager::client::{in_time, millis, proxy_type};

/// What a shared semaphore does. Timeouts are in milliseconds; `None`
/// waits as long as it takes.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub(crate) enum SemaphoreOp {
    Acquire { timeout_ms: Option<u64> },
    Release,
    /// Answers the count.
    Value,
}

/// What creating a semaphore takes.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub(crate) struct NewSemaphore {
    /// The initial count.
    pub(crate) value: u64,
    /// Whether it may never be released past its initial count.
    pub(crate) bounded: bool,
}

proxy_type!(
    /// A shared semaphore, bounded or not
    /// ([`Manager::semaphore`](crate::manager::Manager::semaphore),
    /// [`Manager::bounded_semaphore`](crate::manager::Manager::bounded_semaphore)).
    /// What a process that dies holds is given back.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// # fn main() -> pproc::Result<()> {
    /// let manager = pproc::Manager::start()?;
    /// let slots = manager.semaphore(2)?;
    /// slots.acquire()?;
    /// slots.acquire()?;
    /// assert_eq!(slots.value()?, 0);
    /// assert!(!slots.acquire_timeout(Duration::from_millis(10))?, "no slot left");
    /// slots.release()?;
    /// assert!(slots.acquire_timeout(Duration::from_secs(10))?);
    /// # Ok(())
    /// # }
    /// ```
    Semaphore
);

impl Semaphore {
    /// Waits until the count is positive and decrements it.
    ///
    /// # Errors
    ///
    /// As [`Map::insert`](crate::manager::Map::insert).
    pub fn acquire(&self) -> Result<()> {
        self.proxy.ask(SemaphoreOp::Acquire { timeout_ms: None })
    }

    /// Waits at most `timeout` to decrement the count; whether it did.
    ///
    /// # Errors
    ///
    /// As [`Map::insert`](crate::manager::Map::insert).
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<bool> {
        in_time(self.proxy.ask(SemaphoreOp::Acquire {
            timeout_ms: millis(Some(timeout)),
        }))
    }

    /// Increments the count, waking a waiter.
    ///
    /// # Errors
    ///
    /// [`Error::Remote`](crate::Error::Remote) if a bounded semaphore would
    /// pass its initial value, or as
    /// [`Map::insert`](crate::manager::Map::insert).
    pub fn release(&self) -> Result<()> {
        self.proxy.ask(SemaphoreOp::Release)
    }

    /// The count now.
    ///
    /// # Errors
    ///
    /// As [`Map::insert`](crate::manager::Map::insert).
    pub fn value(&self) -> Result<u64> {
        self.proxy.ask(SemaphoreOp::Value)
    }
}

/// A semaphore's count, and who holds what of it.
struct Counter {
    value: u64,
    /// The initial value, for a bounded semaphore.
    bound: Option<u64>,
    /// What each client holds, given back if it goes away.
    held: HashMap<ClientId, u64>,
}

/// A semaphore in the server.
pub(crate) struct SemaphoreState(Watched<Counter>);

impl ServerObject for SemaphoreState {
    const NAME: &'static str = "semaphore";
    type New = NewSemaphore;
    type Op = SemaphoreOp;

    fn build(new: NewSemaphore, _: &Table) -> Result<Self, String> {
        Ok(Self(Watched::new(Counter {
            value: new.value,
            bound: new.bounded.then_some(new.value),
            held: HashMap::new(),
        })))
    }

    fn call(&self, op: SemaphoreOp, caller: &Caller<'_>) -> CallResult {
        match op {
            SemaphoreOp::Acquire { timeout_ms } => {
                let mut counter = self.0.wait(caller, timeout_ms, |c| c.value > 0)?;
                counter.value -= 1;
                *counter.held.entry(caller.id).or_default() += 1;
                done(&())
            }
            SemaphoreOp::Release => {
                let mut counter = self.0.lock();
                if counter.bound.is_some_and(|bound| counter.value >= bound) {
                    return Err(Fault::Message(
                        "a bounded semaphore released too many times".into(),
                    ));
                }
                counter.value += 1;
                if let Some(held) = counter.held.get_mut(&caller.id) {
                    *held -= 1;
                    if *held == 0 {
                        counter.held.remove(&caller.id);
                    }
                }
                self.0.notify();
                done(&())
            }
            SemaphoreOp::Value => done(&self.0.lock().value),
        }
    }

    fn release(&self, client: ClientId) {
        let mut counter = self.0.lock();
        if let Some(held) = counter.held.remove(&client) {
            counter.value += held;
            self.0.notify();
        }
    }
}
