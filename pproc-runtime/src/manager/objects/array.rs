//! A shared fixed-length array of numbers.

use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::{CallResult, Caller, ServerObject, done, index, Table};
use crate::wire::codec::{decode, encode};
use crate::error::Result;
use crate::manager::client::{collection_methods, proxy_type};
use crate::manager::number::{self, NumKind, Number};

/// What a shared array of numbers does. Indices out of range are faults.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum ArrayOp {
    /// Answers the value itself, not wrapped.
    Get {
        index: u64,
    },
    Set {
        index: u64,
        value: Vec<u8>,
    },
    /// Answers the sum itself, not wrapped.
    Add {
        index: u64,
        delta: Vec<u8>,
        kind: NumKind,
    },
    Len,
    ToVec,
}

proxy_type!(
    /// A shared fixed-length array of numbers.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> pproc::Result<()> {
    /// let manager = pproc::Manager::start()?;
    /// let histogram = manager.array([0_u32; 3])?;
    /// for bucket in [2, 0, 2] {
    ///     histogram.add(bucket, 1)?; // atomic, in the manager
    /// }
    /// histogram.set(1, 9)?;
    /// assert_eq!(histogram.to_vec()?, [1, 9, 2]);
    /// assert!(histogram.get(3).is_err(), "its length is fixed");
    /// # Ok(())
    /// # }
    /// ```
    Array<T>
);

impl<T: Number> Array<T> {
    /// The value at `index`.
    ///
    /// # Errors
    ///
    /// [`Error::Remote`](crate::Error::Remote) if `index` is out of range,
    /// or as [`Map::insert`](crate::manager::Map::insert).
    pub fn get(&self, index: usize) -> Result<T> {
        decode(&self.proxy.ask_raw(ArrayOp::Get {
            index: index as u64,
        })?)
    }

    /// Replaces the value at `index`.
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get).
    pub fn set(&self, index: usize, value: T) -> Result<()> {
        self.proxy.ask(ArrayOp::Set {
            index: index as u64,
            value: encode(&value)?,
        })
    }

    /// Adds `delta` to the value at `index`, atomically in the manager;
    /// returns the new value.
    ///
    /// # Errors
    ///
    /// [`Error::Remote`](crate::Error::Remote) if the sum overflows, or as
    /// [`get`](Self::get).
    pub fn add(&self, index: usize, delta: T) -> Result<T> {
        decode(&self.proxy.ask_raw(ArrayOp::Add {
            index: index as u64,
            delta: encode(&delta)?,
            kind: T::KIND,
        })?)
    }

    collection_methods! {
        len: ArrayOp::Len, "Its length.", "Whether its length is 0.";
        to_vec: ArrayOp::ToVec, T;
    }
}

/// An array in the server: serialized numbers.
pub(crate) struct ArrayState(Mutex<Vec<Vec<u8>>>);

impl ServerObject for ArrayState {
    const NAME: &'static str = "array";
    /// Its values, serialized.
    type New = Vec<Vec<u8>>;
    type Op = ArrayOp;

    fn build(values: Vec<Vec<u8>>, _: &Table) -> Result<Self, String> {
        Ok(Self(Mutex::new(values)))
    }

    fn call(&self, op: ArrayOp, _: &Caller<'_>) -> CallResult {
        let mut array = crate::lock::lock(&self.0);
        match op {
            ArrayOp::Get { index: i } => {
                let i = index(i, array.len())?;
                Ok(array[i].clone())
            }
            ArrayOp::Set { index: i, value } => {
                let i = index(i, array.len())?;
                array[i] = value;
                done(&())
            }
            ArrayOp::Add {
                index: i,
                delta,
                kind,
            } => {
                let i = index(i, array.len())?;
                let sum = number::add(kind, Some(&array[i]), &delta)?;
                array[i].clone_from(&sum);
                Ok(sum)
            }
            ArrayOp::Len => done(&array.len()),
            ArrayOp::ToVec => done(&*array),
        }
    }
}
