//! A shared list.

use std::sync::Mutex;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{CallResult, Caller, ServerObject, done, index, Table};
use crate::wire::codec::{decode, encode};
use crate::error::Result;
use crate::manager::client::{collection_methods, decode_some, proxy_type};

/// What a shared list does. Indices out of range are faults.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum ListOp {
    Push {
        value: Vec<u8>,
    },
    /// Answers the last value, if any.
    Pop,
    /// Answers the value itself, not wrapped.
    Get {
        index: u64,
    },
    Set {
        index: u64,
        value: Vec<u8>,
    },
    /// Inserts before `index`; `index` may be the length.
    Insert {
        index: u64,
        value: Vec<u8>,
    },
    /// Answers the value removed itself, not wrapped.
    Remove {
        index: u64,
    },
    Extend {
        values: Vec<Vec<u8>>,
    },
    Len,
    Clear,
    ToVec,
}

proxy_type!(
    /// A shared list.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> pproc::Result<()> {
    /// let manager = pproc::Manager::start()?;
    /// let steps = manager.list(&["fetch".to_string(), "build".to_string()])?;
    /// steps.push(&"test".into())?;
    /// steps.insert(0, &"plan".into())?;
    /// assert_eq!(steps.get(1)?, "fetch");
    /// assert_eq!(steps.pop()?.as_deref(), Some("test"));
    /// assert_eq!(steps.to_vec()?, ["plan", "fetch", "build"]);
    /// # Ok(())
    /// # }
    /// ```
    List<T>
);

impl<T: Serialize + DeserializeOwned> List<T> {
    /// Appends `value`.
    ///
    /// # Errors
    ///
    /// As [`Map::insert`](crate::manager::Map::insert).
    pub fn push(&self, value: &T) -> Result<()> {
        self.proxy.ask(ListOp::Push {
            value: encode(value)?,
        })
    }

    /// Removes the last value and returns it.
    ///
    /// # Errors
    ///
    /// As [`Map::insert`](crate::manager::Map::insert).
    pub fn pop(&self) -> Result<Option<T>> {
        decode_some(self.proxy.ask(ListOp::Pop)?)
    }

    /// The value at `index`.
    ///
    /// # Errors
    ///
    /// [`Error::Remote`](crate::Error::Remote) if `index` is out of range,
    /// or as [`Map::insert`](crate::manager::Map::insert).
    pub fn get(&self, index: usize) -> Result<T> {
        decode(&self.proxy.ask_raw(ListOp::Get {
            index: index as u64,
        })?)
    }

    /// Replaces the value at `index`.
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get).
    pub fn set(&self, index: usize, value: &T) -> Result<()> {
        self.proxy.ask(ListOp::Set {
            index: index as u64,
            value: encode(value)?,
        })
    }

    /// Inserts `value` at `index`, shifting what follows.
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get).
    pub fn insert(&self, index: usize, value: &T) -> Result<()> {
        self.proxy.ask(ListOp::Insert {
            index: index as u64,
            value: encode(value)?,
        })
    }

    /// Removes the value at `index` and returns it.
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get).
    pub fn remove(&self, index: usize) -> Result<T> {
        decode(&self.proxy.ask_raw(ListOp::Remove {
            index: index as u64,
        })?)
    }

    /// Appends every value of `values`, in one call.
    ///
    /// # Errors
    ///
    /// As [`Map::insert`](crate::manager::Map::insert).
    pub fn extend<'a>(&self, values: impl IntoIterator<Item = &'a T>) -> Result<()>
    where
        T: 'a,
    {
        let values = values.into_iter().map(encode).collect::<Result<Vec<_>>>()?;
        self.proxy.ask(ListOp::Extend { values })
    }

    collection_methods! {
        len: ListOp::Len, "The number of values.", "Whether it has no values.";
        clear: ListOp::Clear, "Removes every value.";
        to_vec: ListOp::ToVec, T;
    }
}

/// A list in the server: serialized values.
pub(crate) struct ListState(Mutex<Vec<Vec<u8>>>);

impl ServerObject for ListState {
    const NAME: &'static str = "list";
    /// Its values, serialized.
    type New = Vec<Vec<u8>>;
    type Op = ListOp;

    fn build(values: Vec<Vec<u8>>, _: &Table) -> Result<Self, String> {
        Ok(Self(Mutex::new(values)))
    }

    fn call(&self, op: ListOp, _: &Caller<'_>) -> CallResult {
        let mut list = crate::lock::lock(&self.0);
        match op {
            ListOp::Push { value } => {
                list.push(value);
                done(&())
            }
            ListOp::Pop => done(&list.pop()),
            ListOp::Get { index: i } => {
                let i = index(i, list.len())?;
                Ok(list[i].clone())
            }
            ListOp::Set { index: i, value } => {
                let i = index(i, list.len())?;
                list[i] = value;
                done(&())
            }
            ListOp::Insert { index: i, value } => {
                let i = usize::try_from(i)
                    .ok()
                    .filter(|i| *i <= list.len())
                    .ok_or_else(|| format!("index {i} out of range for insertion"))?;
                list.insert(i, value);
                done(&())
            }
            ListOp::Remove { index: i } => {
                let i = index(i, list.len())?;
                Ok(list.remove(i))
            }
            ListOp::Extend { values } => {
                list.extend(values);
                done(&())
            }
            ListOp::Len => done(&list.len()),
            ListOp::Clear => done(&list.clear()),
            ListOp::ToVec => done(&*list),
        }
    }
}
