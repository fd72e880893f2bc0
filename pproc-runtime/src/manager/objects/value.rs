//! A shared value.

use std::sync::Mutex;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{CallResult, Caller, ServerObject, done, Table};
use crate::wire::codec::{decode, encode};
use crate::error::Result;
use crate::manager::client::proxy_type;
use crate::manager::number::{self, NumKind, Number};

/// What a shared value does.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum ValueOp {
    /// Answers the value itself, not wrapped.
    Get,
    Set { value: Vec<u8> },
    /// Answers the sum itself, not wrapped.
    Add { delta: Vec<u8>, kind: NumKind },
}

proxy_type!(
    /// A shared value.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> pproc::Result<()> {
    /// let manager = pproc::Manager::start()?;
    /// let status = manager.value(&"idle".to_string())?;
    /// status.set(&"busy".into())?;
    /// assert_eq!(status.get()?, "busy");
    /// // Values of a `Number` type add atomically, in the manager.
    /// let done = manager.value(&0_u64)?;
    /// assert_eq!(done.add(3)?, 3);
    /// # Ok(())
    /// # }
    /// ```
    Value<T>
);

impl<T: Serialize + DeserializeOwned> Value<T> {
    /// The value.
    ///
    /// # Errors
    ///
    /// As [`Map::insert`](crate::manager::Map::insert).
    pub fn get(&self) -> Result<T> {
        decode(&self.proxy.ask_raw(ValueOp::Get)?)
    }

    /// Replaces the value.
    ///
    /// # Errors
    ///
    /// As [`Map::insert`](crate::manager::Map::insert).
    pub fn set(&self, value: &T) -> Result<()> {
        self.proxy.ask(ValueOp::Set {
            value: encode(value)?,
        })
    }
}

impl<T: Number> Value<T> {
    /// Adds `delta`, atomically in the manager; returns the new value.
    ///
    /// # Errors
    ///
    /// [`Error::Remote`](crate::Error::Remote) if the sum overflows, or as
    /// [`Map::insert`](crate::manager::Map::insert).
    pub fn add(&self, delta: T) -> Result<T> {
        decode(&self.proxy.ask_raw(ValueOp::Add {
            delta: encode(&delta)?,
            kind: T::KIND,
        })?)
    }
}

/// A value in the server, serialized.
pub(crate) struct ValueState(Mutex<Vec<u8>>);

impl ServerObject for ValueState {
    const NAME: &'static str = "value";
    /// Its value, serialized.
    type New = Vec<u8>;
    type Op = ValueOp;

    fn build(value: Vec<u8>, _: &Table) -> Result<Self, String> {
        Ok(Self(Mutex::new(value)))
    }

    fn call(&self, op: ValueOp, _: &Caller<'_>) -> CallResult {
        let mut value = crate::lock::lock(&self.0);
        match op {
            ValueOp::Get => Ok(value.clone()),
            ValueOp::Set { value: new } => {
                *value = new;
                done(&())
            }
            ValueOp::Add { delta, kind } => {
                let sum = number::add(kind, Some(&value), &delta)?;
                value.clone_from(&sum);
                Ok(sum)
            }
        }
    }
}
