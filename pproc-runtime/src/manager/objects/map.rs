//! A shared map (Python's `dict`), keyed by the serialized key.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{CallResult, Caller, ServerObject, done, Table};
use crate::wire::codec::{decode, encode};
use crate::error::Result;
use crate::manager::client::{collection_methods, decode_all, decode_some, proxy_type};
use crate::manager::number::{self, NumKind, Number};

/// What a shared map does.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum MapOp {
    /// Answers the value replaced, if any.
    Insert { key: Vec<u8>, value: Vec<u8> },
    /// Answers the value, if any.
    Get { key: Vec<u8> },
    /// Answers the value removed, if any.
    Remove { key: Vec<u8> },
    ContainsKey { key: Vec<u8> },
    Len,
    Clear,
    /// Answers the keys, in order.
    Keys,
    /// Answers the entries, in the keys' order.
    Items,
    /// Adds `delta` to the value of `key` (0 if it has none); answers the
    /// sum itself, not wrapped.
    Add {
        key: Vec<u8>,
        delta: Vec<u8>,
        kind: NumKind,
    },
}

proxy_type!(
    /// A shared map (Python's `dict`), keyed by the serialized key.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> pproc::Result<()> {
    /// let manager = pproc::Manager::start()?;
    /// let stock = manager.map::<String, u32>()?;
    /// assert_eq!(stock.insert(&"apples".into(), &3)?, None);
    /// assert_eq!(stock.add(&"apples".into(), 2)?, 5); // atomic, in the manager
    /// assert_eq!(stock.add(&"pears".into(), 1)?, 1); // a missing key counts as 0
    /// assert_eq!(stock.remove(&"pears".into())?, Some(1));
    /// assert_eq!(stock.items()?, [("apples".to_string(), 5)]);
    /// # Ok(())
    /// # }
    /// ```
    Map<K, V>
);

impl<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned> Map<K, V> {
    /// Sets `key` to `value`; returns the value it replaced.
    ///
    /// # Errors
    ///
    /// As every proxy call: [`Error::Disconnected`](crate::Error::Disconnected)
    /// if the manager is gone, [`Error::Remote`](crate::Error::Remote) if it
    /// refused the call, [`Error::Codec`](crate::Error::Codec) for a value
    /// that does not serialize.
    pub fn insert(&self, key: &K, value: &V) -> Result<Option<V>> {
        decode_some(self.proxy.ask(MapOp::Insert {
            key: encode(key)?,
            value: encode(value)?,
        })?)
    }

    /// The value of `key`.
    ///
    /// # Errors
    ///
    /// As [`insert`](Self::insert).
    pub fn get(&self, key: &K) -> Result<Option<V>> {
        decode_some(self.proxy.ask(MapOp::Get { key: encode(key)? })?)
    }

    /// Removes `key`; returns its value.
    ///
    /// # Errors
    ///
    /// As [`insert`](Self::insert).
    pub fn remove(&self, key: &K) -> Result<Option<V>> {
        decode_some(self.proxy.ask(MapOp::Remove { key: encode(key)? })?)
    }

    /// Whether `key` has a value.
    ///
    /// # Errors
    ///
    /// As [`insert`](Self::insert).
    pub fn contains_key(&self, key: &K) -> Result<bool> {
        self.proxy.ask(MapOp::ContainsKey { key: encode(key)? })
    }

    collection_methods! {
        len: MapOp::Len, "The number of entries.", "Whether it has no entries.";
        clear: MapOp::Clear, "Removes every entry.";
    }

    /// The keys, in the order of their serialized forms.
    ///
    /// # Errors
    ///
    /// As [`insert`](Self::insert).
    pub fn keys(&self) -> Result<Vec<K>> {
        let keys: Vec<Vec<u8>> = self.proxy.ask(MapOp::Keys)?;
        decode_all(&keys)
    }

    /// Every entry, in the order of the keys' serialized forms.
    ///
    /// # Errors
    ///
    /// As [`insert`](Self::insert).
    pub fn items(&self) -> Result<Vec<(K, V)>> {
        let items: Vec<(Vec<u8>, Vec<u8>)> = self.proxy.ask(MapOp::Items)?;
        items
            .iter()
            .map(|(k, v)| Ok((decode(k)?, decode(v)?)))
            .collect()
    }
}

impl<K: Serialize + DeserializeOwned, V: Number> Map<K, V> {
    /// Adds `delta` to the value of `key` (0 if it has none), atomically in
    /// the manager; returns the new value.
    ///
    /// # Errors
    ///
    /// [`Error::Remote`](crate::Error::Remote) if the sum overflows, or as
    /// [`insert`](Self::insert).
    pub fn add(&self, key: &K, delta: V) -> Result<V> {
        decode(&self.proxy.ask_raw(MapOp::Add {
            key: encode(key)?,
            delta: encode(&delta)?,
            kind: V::KIND,
        })?)
    }
}

/// A map in the server: serialized keys to serialized values.
pub(crate) struct MapState(Mutex<BTreeMap<Vec<u8>, Vec<u8>>>);

impl ServerObject for MapState {
    const NAME: &'static str = "map";
    type New = ();
    type Op = MapOp;

    fn build((): (), _: &Table) -> Result<Self, String> {
        Ok(Self(Mutex::default()))
    }

    fn call(&self, op: MapOp, _: &Caller<'_>) -> CallResult {
        let mut map = crate::lock::lock(&self.0);
        match op {
            MapOp::Insert { key, value } => done(&map.insert(key, value)),
            MapOp::Get { key } => done(&map.get(&key)),
            MapOp::Remove { key } => done(&map.remove(&key)),
            MapOp::ContainsKey { key } => done(&map.contains_key(&key)),
            MapOp::Len => done(&map.len()),
            MapOp::Clear => done(&map.clear()),
            MapOp::Keys => done(&map.keys().collect::<Vec<_>>()),
            MapOp::Items => done(&map.iter().collect::<Vec<_>>()),
            MapOp::Add { key, delta, kind } => {
                let sum = number::add(kind, map.get(&key).map(Vec::as_slice), &delta)?;
                map.insert(key, sum.clone());
                Ok(sum)
            }
        }
    }
}
