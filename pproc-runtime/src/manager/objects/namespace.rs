//! A shared namespace: named fields of any serializable types.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{CallResult, Caller, ServerObject, done, Table};
use crate::wire::codec::encode;
use crate::error::Result;
use crate::manager::client::{decode_some, proxy_type};

/// What a shared namespace does.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum NamespaceOp {
    /// Answers the field's value, if any.
    Get { name: String },
    /// Answers whether the field existed.
    Set { name: String, value: Vec<u8> },
    /// Answers whether the field existed.
    Remove { name: String },
    /// Answers the fields' names, sorted.
    Names,
}

proxy_type!(
    /// A shared namespace: named fields of any serializable types.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> pproc::Result<()> {
    /// let manager = pproc::Manager::start()?;
    /// let config = manager.namespace()?;
    /// config.set("depth", &3_u32)?;
    /// config.set("title", "render")?; // fields of different types
    /// assert_eq!(config.get::<String>("title")?.as_deref(), Some("render"));
    /// assert_eq!(config.get::<u32>("width")?, None);
    /// assert!(config.remove("depth")?);
    /// assert_eq!(config.names()?, ["title"]);
    /// # Ok(())
    /// # }
    /// ```
    Namespace
);

impl Namespace {
    /// The field `name`, as a `T`.
    ///
    /// # Errors
    ///
    /// [`Error::Codec`](crate::Error::Codec) if it holds another type, or
    /// as [`Map::insert`](crate::manager::Map::insert).
    pub fn get<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>> {
        decode_some(self.proxy.ask(NamespaceOp::Get { name: name.into() })?)
    }

    /// Sets the field `name`; returns whether it existed.
    ///
    /// # Errors
    ///
    /// As [`Map::insert`](crate::manager::Map::insert).
    pub fn set<T: Serialize + ?Sized>(&self, name: &str, value: &T) -> Result<bool> {
        self.proxy.ask(NamespaceOp::Set {
            name: name.into(),
            value: encode(value)?,
        })
    }

    /// Removes the field `name`; returns whether it existed.
    ///
    /// # Errors
    ///
    /// As [`Map::insert`](crate::manager::Map::insert).
    pub fn remove(&self, name: &str) -> Result<bool> {
        self.proxy.ask(NamespaceOp::Remove { name: name.into() })
    }

    /// The names of its fields, sorted.
    ///
    /// # Errors
    ///
    /// As [`Map::insert`](crate::manager::Map::insert).
    pub fn names(&self) -> Result<Vec<String>> {
        self.proxy.ask(NamespaceOp::Names)
    }
}

/// A namespace in the server: field names to serialized values.
pub(crate) struct NamespaceState(Mutex<BTreeMap<String, Vec<u8>>>);

impl ServerObject for NamespaceState {
    const NAME: &'static str = "namespace";
    type New = ();
    type Op = NamespaceOp;

    fn build((): (), _: &Table) -> Result<Self, String> {
        Ok(Self(Mutex::default()))
    }

    fn call(&self, op: NamespaceOp, _: &Caller<'_>) -> CallResult {
        let mut fields = crate::lock::lock(&self.0);
        match op {
            NamespaceOp::Get { name } => done(&fields.get(&name)),
            NamespaceOp::Set { name, value } => done(&fields.insert(name, value).is_some()),
            NamespaceOp::Remove { name } => done(&fields.remove(&name).is_some()),
            NamespaceOp::Names => done(&fields.keys().collect::<Vec<_>>()),
        }
    }
}
