//! A shared FIFO queue, bounded or not.

use std::collections::VecDeque;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{CallResult, Caller, ServerObject, Watched, done, Table};
use crate::wire::codec::{decode, encode};
use crate::error::{Error, Result};
use crate::manager::client::{collection_methods, millis, proxy_type};

/// What a shared queue does. Timeouts are in milliseconds; `None` waits as
/// long as it takes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum QueueOp {
    /// Waits for room in a bounded queue.
    Put {
        value: Vec<u8>,
        timeout_ms: Option<u64>,
    },
    /// Waits for a value; answers it itself, not wrapped.
    Get { timeout_ms: Option<u64> },
    Len,
}

proxy_type!(
    /// A shared FIFO queue, bounded when created with a capacity: `put`
    /// waits for room, `get` for a value.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// # fn main() -> pproc::Result<()> {
    /// let manager = pproc::Manager::start()?;
    /// let jobs = manager.queue::<u32>(Some(2))?;
    /// jobs.put(&1)?;
    /// jobs.put(&2)?;
    /// let full = jobs.put_timeout(&3, Duration::from_millis(10));
    /// assert!(matches!(full, Err(pproc::Error::Timeout)));
    /// assert_eq!(jobs.get()?, 1); // first in, first out
    /// assert_eq!(jobs.try_get()?, Some(2));
    /// assert_eq!(jobs.try_get()?, None);
    /// # Ok(())
    /// # }
    /// ```
    Queue<T>
);

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// Appends `value`, waiting while a bounded queue is full.
    ///
    /// # Errors
    ///
    /// As [`Map::insert`](crate::manager::Map::insert).
    pub fn put(&self, value: &T) -> Result<()> {
        self.proxy.ask(QueueOp::Put {
            value: encode(value)?,
            timeout_ms: None,
        })
    }

    /// Appends `value`, waiting at most `timeout` for room.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] if the queue stayed full, or as
    /// [`Map::insert`](crate::manager::Map::insert).
    pub fn put_timeout(&self, value: &T, timeout: Duration) -> Result<()> {
        self.proxy.ask(QueueOp::Put {
            value: encode(value)?,
            timeout_ms: millis(Some(timeout)),
        })
    }

    /// Takes the first value, waiting for one.
    ///
    /// # Errors
    ///
    /// As [`Map::insert`](crate::manager::Map::insert).
    pub fn get(&self) -> Result<T> {
        decode(&self.proxy.ask_raw(QueueOp::Get { timeout_ms: None })?)
    }

    /// Takes the first value, waiting at most `timeout` for one.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] if none came, or as
    /// [`Map::insert`](crate::manager::Map::insert).
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        decode(&self.proxy.ask_raw(QueueOp::Get {
            timeout_ms: millis(Some(timeout)),
        })?)
    }

    /// Takes the first value if there is one, without waiting.
    ///
    /// # Errors
    ///
    /// As [`Map::insert`](crate::manager::Map::insert).
    pub fn try_get(&self) -> Result<Option<T>> {
        match self.get_timeout(Duration::ZERO) {
            Ok(value) => Ok(Some(value)),
            Err(Error::Timeout) => Ok(None),
            Err(err) => Err(err),
        }
    }

    collection_methods! {
        len: QueueOp::Len, "The number of values waiting.", "Whether no value is waiting.";
    }
}

/// A queue in the server: serialized values, and its capacity if bounded.
pub(crate) struct QueueState {
    values: Watched<VecDeque<Vec<u8>>>,
    capacity: Option<usize>,
}

impl ServerObject for QueueState {
    const NAME: &'static str = "queue";
    /// Its capacity, if bounded.
    type New = Option<usize>;
    type Op = QueueOp;

    fn build(capacity: Option<usize>, _: &Table) -> Result<Self, String> {
        Ok(Self {
            values: Watched::default(),
            capacity,
        })
    }

    fn call(&self, op: QueueOp, caller: &Caller<'_>) -> CallResult {
        match op {
            QueueOp::Put { value, timeout_ms } => {
                let mut values = self.values.wait(caller, timeout_ms, |q| {
                    self.capacity.is_none_or(|cap| q.len() < cap)
                })?;
                values.push_back(value);
                self.values.notify();
                done(&())
            }
            QueueOp::Get { timeout_ms } => {
                let mut values = self.values.wait(caller, timeout_ms, |q| !q.is_empty())?;
                let value = values.pop_front().unwrap_or_default();
                self.values.notify();
                Ok(value)
            }
            QueueOp::Len => done(&self.values.lock().len()),
        }
    }
}
