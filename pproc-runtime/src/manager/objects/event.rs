//! A shared event: a flag that processes can wait for.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{CallResult, Caller, Fault, ServerObject, Watched, done, Table};
use crate::error::Result;
use crate::manager::client::{millis, proxy_type};

/// What a shared event does. Timeouts are in milliseconds; `None` waits as
/// long as it takes.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub(crate) enum EventOp {
    Set,
    Clear,
    IsSet,
    /// Answers whether the flag is set.
    Wait { timeout_ms: Option<u64> },
}

proxy_type!(
    /// A shared event: a flag that processes can wait for.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// # fn main() -> pproc::Result<()> {
    /// let manager = pproc::Manager::start()?;
    /// let go = manager.event()?;
    /// let waiter = go.clone(); // the same event, a connection of its own
    /// let started = std::thread::spawn(move || waiter.wait(None));
    /// go.set()?;
    /// assert!(started.join().expect("the waiter panicked")?);
    /// go.clear()?;
    /// assert!(!go.wait(Some(Duration::from_millis(10)))?, "cleared: it times out");
    /// # Ok(())
    /// # }
    /// ```
    Event
);

impl Event {
    /// Sets the flag, waking every waiter.
    ///
    /// # Errors
    ///
    /// As [`Map::insert`](crate::manager::Map::insert).
    pub fn set(&self) -> Result<()> {
        self.proxy.ask(EventOp::Set)
    }

    /// Clears the flag.
    ///
    /// # Errors
    ///
    /// As [`Map::insert`](crate::manager::Map::insert).
    pub fn clear(&self) -> Result<()> {
        self.proxy.ask(EventOp::Clear)
    }

    /// Whether the flag is set.
    ///
    /// # Errors
    ///
    /// As [`Map::insert`](crate::manager::Map::insert).
    pub fn is_set(&self) -> Result<bool> {
        self.proxy.ask(EventOp::IsSet)
    }

    /// Waits until the flag is set, or `timeout` passes (`None`: as long as
    /// it takes); whether it is set.
    ///
    /// # Errors
    ///
    /// As [`Map::insert`](crate::manager::Map::insert).
    pub fn wait(&self, timeout: Option<Duration>) -> Result<bool> {
        self.proxy.ask(EventOp::Wait {
            timeout_ms: millis(timeout),
        })
    }
}

/// An event in the server: its flag.
pub(crate) struct EventState(Watched<bool>);

impl ServerObject for EventState {
    const NAME: &'static str = "event";
    type New = ();
    type Op = EventOp;

    fn build((): (), _: &Table) -> Result<Self, String> {
        Ok(Self(Watched::default()))
    }

    fn call(&self, op: EventOp, caller: &Caller<'_>) -> CallResult {
        match op {
            EventOp::Set => {
                *self.0.lock() = true;
                self.0.notify();
                done(&())
            }
            EventOp::Clear => {
                *self.0.lock() = false;
                done(&())
            }
            EventOp::IsSet => done(&*self.0.lock()),
            EventOp::Wait { timeout_ms } => match self.0.wait(caller, timeout_ms, |set| *set) {
                Ok(_) => done(&true),
                Err(Fault::Timeout) => done(&false),
                Err(other) => Err(other),
            },
        }
    }
}
