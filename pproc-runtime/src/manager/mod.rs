//! Shared objects in a server process (multiprocessing's manager objects),
//! reached through proxies, locally or over the network with an
//! authentication key.
//!
//! A [`Manager`] is a server process that owns shared objects; this
//! program, its children and other programs use them through typed
//! proxies: [`Map`], [`List`], [`Queue`], [`Value`], [`Namespace`],
//! [`Lock`] (also reentrant), [`Semaphore`] (also bounded), [`Condition`],
//! [`Event`], [`Array`] of numbers, and [`Shared`] for types of your own
//! registered with `pproc::shared!`. Each call on a proxy is one
//! round trip to the manager, which runs it under the object's lock: many
//! processes hammering one object lose no update.
//!
//! Proxies are serializable: pass one to a `#[parallel]` function and the
//! child uses the same object. Each proxy has its own connection, opened on
//! first use; a lock is held by the proxy that acquired it, and a lock or
//! semaphore held by a client that goes away (its process died) is given
//! back, waking the next waiter.
//!
//! ```
//! use pproc::{parallel, manager::{Manager, Map}};
//!
//! #[parallel]
//! fn tally(words: Map<String, u64>, text: String) {
//!     for word in text.split_whitespace() {
//!         words.add(&word.to_owned(), 1).unwrap();
//!     }
//! }
//!
//! # fn main() -> pproc::Result<()> {
//! let manager = Manager::start()?;
//! let words = manager.map::<String, u64>()?;
//! let handles = ["a b a", "b a c"]
//!     .map(|text| tally::start(words.clone(), text.into()).unwrap());
//! for h in handles {
//!     h.join()?;
//! }
//! assert_eq!(words.get(&"a".into())?, Some(3));
//! assert_eq!(words.len()?, 3);
//! manager.shutdown()?;
//! # Ok(())
//! # }
//! ```
//!
//! # Across machines
//!
//! [`Manager::serve`] runs a manager on a TCP address, and
//! [`Manager::connect`] reaches it from another program, here or on
//! another machine, with the same key. Both ends authenticate each other by
//! challenge and response (HMAC-SHA256 of random challenges, compared in
//! constant time); nothing is served, and nothing larger than a challenge
//! is read, before a client has proved it knows the key.
//!
//! **The key authenticates; it does not encrypt.** Everything after the
//! handshake, your values included, crosses the network in the clear, and
//! someone on the path could read it or take over an authenticated
//! connection. On a network you do not trust, bind the manager to loopback
//! and reach it through an encrypted tunnel (`ssh -L`, `WireGuard`, `stunnel`),
//! and use a long random key (see [`Manager::key`]).

mod auth;
mod client;
mod number;
mod objects;
mod protocol;
mod server;
mod transport;

use std::fmt;
use std::marker::PhantomData;
use std::net::ToSocketAddrs;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use objects::custom::{Entry as SharedEntry, create as shared_create, invoke as shared_invoke};
pub use number::{NumKind, Number};
pub use transport::Address;

#[cfg(any(test, feature = "fuzzing"))]
pub(crate) use server::{fuzz_handshake, fuzz_requests};

use crate::call::Builder;
use crate::child::{EXIT_PROTOCOL, first_frame};
use crate::conn::{Conn, decode, encode, tag};
use crate::error::{Error, Result};
use crate::handle::Handle;
use client::{Client, Line, Proxy, Target, in_time, millis};
use protocol::{
    ArrayOp, ConditionOp, CustomOp, EventOp, Kind, ListOp, LockOp, MapOp, NamespaceOp, ObjectOp,
    Op, QueueOp, SemaphoreOp, ValueOp,
};
use transport::Listener;

/// The name a manager process is started under.
pub(crate) const MANAGER: &str = "pproc::__manager";

/// A type of your own that a manager can hold, registered with
/// `pproc::shared!`, which implements this trait.
pub trait SharedType: Serialize + DeserializeOwned + Send + 'static {
    /// The name it is registered under: its module path and name.
    const NAME: &'static str;
}

macro_rules! proxy_type {
    ($(#[$meta:meta])* $name:ident $(<$($t:ident),*>)?) => {
        $(#[$meta])*
        #[derive(Serialize, Deserialize)]
        #[serde(bound = "")]
        pub struct $name $(<$($t),*>)? {
            proxy: Proxy,
            #[serde(skip)]
            _types: PhantomData<fn() -> ($($($t,)*)?)>,
        }

        impl $(<$($t),*>)? $name $(<$($t),*>)? {
            fn wrap(proxy: Proxy) -> Self {
                Self { proxy, _types: PhantomData }
            }
        }

        impl $(<$($t),*>)? Clone for $name $(<$($t),*>)? {
            /// The same shared object, through a connection of its own.
            fn clone(&self) -> Self {
                Self::wrap(self.proxy.clone())
            }
        }

        impl $(<$($t),*>)? fmt::Debug for $name $(<$($t),*>)? {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_tuple(stringify!($name)).field(&self.proxy).finish()
            }
        }
    };
}

proxy_type!(
    /// A shared map (Python's `dict`), keyed by the serialized key.
    Map<K, V>
);
proxy_type!(
    /// A shared list.
    List<T>
);
proxy_type!(
    /// A shared FIFO queue, bounded when created with a capacity: `put`
    /// waits for room, `get` for a value.
    Queue<T>
);
proxy_type!(
    /// A shared value.
    Value<T>
);
proxy_type!(
    /// A shared namespace: named fields of any serializable types.
    Namespace
);
proxy_type!(
    /// A shared lock, reentrant or not ([`Manager::lock`],
    /// [`Manager::rlock`]). It is held by the proxy that acquired it; if
    /// that proxy's process dies, the lock is given back.
    Lock
);
proxy_type!(
    /// A shared semaphore, bounded or not ([`Manager::semaphore`],
    /// [`Manager::bounded_semaphore`]). What a process that dies holds is
    /// given back.
    Semaphore
);
proxy_type!(
    /// A shared condition variable, with its lock.
    Condition
);
proxy_type!(
    /// A shared event: a flag that processes can wait for.
    Event
);
proxy_type!(
    /// A shared fixed-length array of numbers.
    Array<T>
);
proxy_type!(
    /// A shared value of a type of your own, registered with
    /// `pproc::shared!`: only the methods it exposes can be
    /// called, through the trait that `shared!` generates or
    /// [`call`](Self::call).
    Shared<T>
);

impl<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned> Map<K, V> {
    /// Sets `key` to `value`; returns the value it replaced.
    ///
    /// # Errors
    ///
    /// As every proxy call: [`Error::Disconnected`] if the manager is gone,
    /// [`Error::Remote`] if it refused the call, [`Error::Codec`] for a
    /// value that does not serialize.
    pub fn insert(&self, key: &K, value: &V) -> Result<Option<V>> {
        let old: Option<Vec<u8>> = self.proxy.ask(MapOp::Insert {
            key: encode(key)?,
            value: encode(value)?,
        })?;
        old.map(|b| decode(&b)).transpose()
    }

    /// The value of `key`.
    ///
    /// # Errors
    ///
    /// As [`insert`](Self::insert).
    pub fn get(&self, key: &K) -> Result<Option<V>> {
        let value: Option<Vec<u8>> = self.proxy.ask(MapOp::Get { key: encode(key)? })?;
        value.map(|b| decode(&b)).transpose()
    }

    /// Removes `key`; returns its value.
    ///
    /// # Errors
    ///
    /// As [`insert`](Self::insert).
    pub fn remove(&self, key: &K) -> Result<Option<V>> {
        let value: Option<Vec<u8>> = self.proxy.ask(MapOp::Remove { key: encode(key)? })?;
        value.map(|b| decode(&b)).transpose()
    }

    /// Whether `key` has a value.
    ///
    /// # Errors
    ///
    /// As [`insert`](Self::insert).
    pub fn contains_key(&self, key: &K) -> Result<bool> {
        self.proxy.ask(MapOp::ContainsKey { key: encode(key)? })
    }

    /// The number of entries.
    ///
    /// # Errors
    ///
    /// As [`insert`](Self::insert).
    pub fn len(&self) -> Result<usize> {
        self.proxy.ask(MapOp::Len)
    }

    /// Whether it has no entries.
    ///
    /// # Errors
    ///
    /// As [`insert`](Self::insert).
    pub fn is_empty(&self) -> Result<bool> {
        self.len().map(|n| n == 0)
    }

    /// Removes every entry.
    ///
    /// # Errors
    ///
    /// As [`insert`](Self::insert).
    pub fn clear(&self) -> Result<()> {
        self.proxy.ask(MapOp::Clear)
    }

    /// The keys, in the order of their serialized forms.
    ///
    /// # Errors
    ///
    /// As [`insert`](Self::insert).
    pub fn keys(&self) -> Result<Vec<K>> {
        let keys: Vec<Vec<u8>> = self.proxy.ask(MapOp::Keys)?;
        keys.iter().map(|b| decode(b)).collect()
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
    /// [`Error::Remote`] if the sum overflows, or as
    /// [`insert`](Self::insert).
    pub fn add(&self, key: &K, delta: V) -> Result<V> {
        let sum = self.proxy.ask_raw(MapOp::Add {
            key: encode(key)?,
            delta: encode(&delta)?,
            kind: V::KIND,
        })?;
        decode(&sum)
    }
}

impl<T: Serialize + DeserializeOwned> List<T> {
    /// Appends `value`.
    ///
    /// # Errors
    ///
    /// As [`Map::insert`].
    pub fn push(&self, value: &T) -> Result<()> {
        self.proxy.ask(ListOp::Push {
            value: encode(value)?,
        })
    }

    /// Removes the last value and returns it.
    ///
    /// # Errors
    ///
    /// As [`Map::insert`].
    pub fn pop(&self) -> Result<Option<T>> {
        let value: Option<Vec<u8>> = self.proxy.ask(ListOp::Pop)?;
        value.map(|b| decode(&b)).transpose()
    }

    /// The value at `index`.
    ///
    /// # Errors
    ///
    /// [`Error::Remote`] if `index` is out of range, or as [`Map::insert`].
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
    /// As [`Map::insert`].
    pub fn extend<'a>(&self, values: impl IntoIterator<Item = &'a T>) -> Result<()>
    where
        T: 'a,
    {
        let values = values.into_iter().map(encode).collect::<Result<Vec<_>>>()?;
        self.proxy.ask(ListOp::Extend { values })
    }

    /// The number of values.
    ///
    /// # Errors
    ///
    /// As [`Map::insert`].
    pub fn len(&self) -> Result<usize> {
        self.proxy.ask(ListOp::Len)
    }

    /// Whether it has no values.
    ///
    /// # Errors
    ///
    /// As [`Map::insert`].
    pub fn is_empty(&self) -> Result<bool> {
        self.len().map(|n| n == 0)
    }

    /// Removes every value.
    ///
    /// # Errors
    ///
    /// As [`Map::insert`].
    pub fn clear(&self) -> Result<()> {
        self.proxy.ask(ListOp::Clear)
    }

    /// A copy of every value.
    ///
    /// # Errors
    ///
    /// As [`Map::insert`].
    pub fn to_vec(&self) -> Result<Vec<T>> {
        let values: Vec<Vec<u8>> = self.proxy.ask(ListOp::ToVec)?;
        values.iter().map(|b| decode(b)).collect()
    }
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// Appends `value`, waiting while a bounded queue is full.
    ///
    /// # Errors
    ///
    /// As [`Map::insert`].
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
    /// [`Error::Timeout`] if the queue stayed full, or as [`Map::insert`].
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
    /// As [`Map::insert`].
    pub fn get(&self) -> Result<T> {
        decode(&self.proxy.ask_raw(QueueOp::Get { timeout_ms: None })?)
    }

    /// Takes the first value, waiting at most `timeout` for one.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] if none came, or as [`Map::insert`].
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        decode(&self.proxy.ask_raw(QueueOp::Get {
            timeout_ms: millis(Some(timeout)),
        })?)
    }

    /// Takes the first value if there is one, without waiting.
    ///
    /// # Errors
    ///
    /// As [`Map::insert`].
    pub fn try_get(&self) -> Result<Option<T>> {
        match self.get_timeout(Duration::ZERO) {
            Ok(value) => Ok(Some(value)),
            Err(Error::Timeout) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// The number of values waiting.
    ///
    /// # Errors
    ///
    /// As [`Map::insert`].
    pub fn len(&self) -> Result<usize> {
        self.proxy.ask(QueueOp::Len)
    }

    /// Whether no value is waiting.
    ///
    /// # Errors
    ///
    /// As [`Map::insert`].
    pub fn is_empty(&self) -> Result<bool> {
        self.len().map(|n| n == 0)
    }
}

impl<T: Serialize + DeserializeOwned> Value<T> {
    /// The value.
    ///
    /// # Errors
    ///
    /// As [`Map::insert`].
    pub fn get(&self) -> Result<T> {
        decode(&self.proxy.ask_raw(ValueOp::Get)?)
    }

    /// Replaces the value.
    ///
    /// # Errors
    ///
    /// As [`Map::insert`].
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
    /// [`Error::Remote`] if the sum overflows, or as [`Map::insert`].
    pub fn add(&self, delta: T) -> Result<T> {
        decode(&self.proxy.ask_raw(ValueOp::Add {
            delta: encode(&delta)?,
            kind: T::KIND,
        })?)
    }
}

impl Namespace {
    /// The field `name`, as a `T`.
    ///
    /// # Errors
    ///
    /// [`Error::Codec`] if it holds another type, or as [`Map::insert`].
    pub fn get<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>> {
        let value: Option<Vec<u8>> = self.proxy.ask(NamespaceOp::Get { name: name.into() })?;
        value.map(|b| decode(&b)).transpose()
    }

    /// Sets the field `name`; returns whether it existed.
    ///
    /// # Errors
    ///
    /// As [`Map::insert`].
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
    /// As [`Map::insert`].
    pub fn remove(&self, name: &str) -> Result<bool> {
        self.proxy.ask(NamespaceOp::Remove { name: name.into() })
    }

    /// The names of its fields, sorted.
    ///
    /// # Errors
    ///
    /// As [`Map::insert`].
    pub fn names(&self) -> Result<Vec<String>> {
        self.proxy.ask(NamespaceOp::Names)
    }
}

/// Holds a shared [`Lock`] (or a [`Condition`]'s lock) until dropped.
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
            fn lock_op(op: LockOp) -> ObjectOp {
                ($wrap)(op)
            }

            /// Waits until the lock is free and takes it.
            ///
            /// # Errors
            ///
            /// [`Error::Remote`] if this proxy holds a non-reentrant lock
            /// already, or as [`Map::insert`].
            pub fn acquire(&self) -> Result<()> {
                self.proxy
                    .ask(Self::lock_op(LockOp::Acquire { timeout_ms: None }))
            }

            /// Waits at most `timeout` for the lock; whether it was taken.
            ///
            /// # Errors
            ///
            /// As [`acquire`](Self::acquire).
            pub fn acquire_timeout(&self, timeout: Duration) -> Result<bool> {
                in_time(self.proxy.ask(Self::lock_op(LockOp::Acquire {
                    timeout_ms: millis(Some(timeout)),
                })))
            }

            /// Releases the lock (once, for a reentrant one).
            ///
            /// # Errors
            ///
            /// [`Error::Remote`] if this proxy does not hold it, or as
            /// [`Map::insert`].
            pub fn release(&self) -> Result<()> {
                self.proxy.ask(Self::lock_op(LockOp::Release))
            }

            /// Takes the lock and returns a guard that releases it.
            ///
            /// # Errors
            ///
            /// As [`acquire`](Self::acquire).
            pub fn lock(&self) -> Result<Guard<'_>> {
                self.acquire()?;
                Ok(Guard {
                    proxy: &self.proxy,
                    release: Self::lock_op(LockOp::Release),
                })
            }
        }
    };
}

locking!(Lock, ObjectOp::Lock);
locking!(Condition, |op| ObjectOp::Condition(ConditionOp::Lock(op)));

impl Semaphore {
    /// Waits until the count is positive and decrements it.
    ///
    /// # Errors
    ///
    /// As [`Map::insert`].
    pub fn acquire(&self) -> Result<()> {
        self.proxy.ask(SemaphoreOp::Acquire { timeout_ms: None })
    }

    /// Waits at most `timeout` to decrement the count; whether it did.
    ///
    /// # Errors
    ///
    /// As [`Map::insert`].
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<bool> {
        in_time(self.proxy.ask(SemaphoreOp::Acquire {
            timeout_ms: millis(Some(timeout)),
        }))
    }

    /// Increments the count, waking a waiter.
    ///
    /// # Errors
    ///
    /// [`Error::Remote`] if a bounded semaphore would pass its initial
    /// value, or as [`Map::insert`].
    pub fn release(&self) -> Result<()> {
        self.proxy.ask(SemaphoreOp::Release)
    }

    /// The count now.
    ///
    /// # Errors
    ///
    /// As [`Map::insert`].
    pub fn value(&self) -> Result<u64> {
        self.proxy.ask(SemaphoreOp::Value)
    }
}

impl Condition {
    /// Releases the lock (which this proxy must hold), waits until
    /// notified or `timeout` passes (`None`: as long as it takes), and
    /// takes the lock back; whether it was notified.
    ///
    /// # Errors
    ///
    /// [`Error::Remote`] if this proxy does not hold the lock, or as
    /// [`Map::insert`].
    pub fn wait(&self, timeout: Option<Duration>) -> Result<bool> {
        self.proxy.ask(ConditionOp::Wait {
            timeout_ms: millis(timeout),
        })
    }

    /// Wakes up to `n` waiters.
    ///
    /// # Errors
    ///
    /// As [`Map::insert`].
    pub fn notify(&self, n: u64) -> Result<()> {
        self.proxy.ask(ConditionOp::Notify { n })
    }

    /// Wakes every waiter.
    ///
    /// # Errors
    ///
    /// As [`Map::insert`].
    pub fn notify_all(&self) -> Result<()> {
        self.notify(u64::MAX)
    }
}

impl Event {
    /// Sets the flag, waking every waiter.
    ///
    /// # Errors
    ///
    /// As [`Map::insert`].
    pub fn set(&self) -> Result<()> {
        self.proxy.ask(EventOp::Set)
    }

    /// Clears the flag.
    ///
    /// # Errors
    ///
    /// As [`Map::insert`].
    pub fn clear(&self) -> Result<()> {
        self.proxy.ask(EventOp::Clear)
    }

    /// Whether the flag is set.
    ///
    /// # Errors
    ///
    /// As [`Map::insert`].
    pub fn is_set(&self) -> Result<bool> {
        self.proxy.ask(EventOp::IsSet)
    }

    /// Waits until the flag is set, or `timeout` passes (`None`: as long as
    /// it takes); whether it is set.
    ///
    /// # Errors
    ///
    /// As [`Map::insert`].
    pub fn wait(&self, timeout: Option<Duration>) -> Result<bool> {
        self.proxy.ask(EventOp::Wait {
            timeout_ms: millis(timeout),
        })
    }
}

impl<T: Number> Array<T> {
    /// The value at `index`.
    ///
    /// # Errors
    ///
    /// [`Error::Remote`] if `index` is out of range, or as [`Map::insert`].
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
    /// [`Error::Remote`] if the sum overflows, or as [`get`](Self::get).
    pub fn add(&self, index: usize, delta: T) -> Result<T> {
        decode(&self.proxy.ask_raw(ArrayOp::Add {
            index: index as u64,
            delta: encode(&delta)?,
            kind: T::KIND,
        })?)
    }

    /// Its length.
    ///
    /// # Errors
    ///
    /// As [`Map::insert`].
    pub fn len(&self) -> Result<usize> {
        self.proxy.ask(ArrayOp::Len)
    }

    /// Whether its length is 0.
    ///
    /// # Errors
    ///
    /// As [`Map::insert`].
    pub fn is_empty(&self) -> Result<bool> {
        self.len().map(|n| n == 0)
    }

    /// A copy of every value.
    ///
    /// # Errors
    ///
    /// As [`Map::insert`].
    pub fn to_vec(&self) -> Result<Vec<T>> {
        let values: Vec<Vec<u8>> = self.proxy.ask(ArrayOp::ToVec)?;
        values.iter().map(|b| decode(b)).collect()
    }
}

impl<T: SharedType> Shared<T> {
    /// Calls the exposed method `method` with `args` (a tuple of its
    /// arguments) in the manager, and returns its result. The trait that
    /// `pproc::shared!` generates calls this, with the types
    /// checked.
    ///
    /// # Errors
    ///
    /// [`Error::Remote`] if `T` does not expose `method` (the message names
    /// the methods it exposes), or as [`Map::insert`].
    pub fn call<A: Serialize, R: DeserializeOwned>(&self, method: &str, args: &A) -> Result<R> {
        decode(&self.proxy.ask_raw(CustomOp::Call {
            method: method.to_owned(),
            args: encode(args)?,
        })?)
    }
}

/// The manager process, which reports where it listens (or why it cannot).
type ServerProcess = Handle<(), (), std::result::Result<Address, String>>;

/// A manager: a server process that owns shared objects (multiprocessing's
/// `Manager`), and a connection to it that creates them.
///
/// See the [module documentation](self).
pub struct Manager {
    target: Target,
    line: Line,
    /// The server process, when this manager started it.
    process: Mutex<Option<ServerProcess>>,
    pid: Option<u32>,
}

impl Manager {
    /// Starts a manager process for this program and its children, on a
    /// local address (Linux's abstract socket namespace) with a random
    /// 32-byte key. It dies with this program.
    ///
    /// # Errors
    ///
    /// [`Error::Spawn`] if the process cannot start, [`Error::Io`] if it
    /// cannot listen.
    pub fn start() -> Result<Self> {
        let nonce = auth::random().map_err(Error::Io)?;
        let name = nonce[..8].iter().fold(String::new(), |mut name, b| {
            use fmt::Write as _;
            let _ = write!(name, "{b:02x}");
            name
        });
        let address = Address::Local(format!("pproc-manager-{}-{name}", std::process::id()));
        Self::launch(&address, auth::random().map_err(Error::Io)?.to_vec())
    }

    /// Starts a manager process that listens on the TCP address `addr`
    /// (port 0 picks a free one: see [`address`](Self::address)), for
    /// clients that know `key`. It dies with this program.
    ///
    /// Read the [module documentation](self#across-machines) on what the
    /// key does and does not protect.
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start).
    pub fn serve(addr: impl ToSocketAddrs, key: impl AsRef<[u8]>) -> Result<Self> {
        Self::launch(&Address::tcp(addr)?, key.as_ref().to_vec())
    }

    /// Runs a manager in this process, on `address`, until an error stops
    /// it (multiprocessing's `serveForever`): for a program whose only job
    /// is to serve. Clients create what they share by name
    /// ([`named`](Self::named)).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if it cannot listen, or if accepting fails for good.
    pub fn serve_forever(address: &Address, key: impl AsRef<[u8]>) -> Result<()> {
        let listener = Listener::bind(address).map_err(Error::Io)?;
        server::Server::new(key.as_ref().to_vec())
            .run(&listener)
            .map_err(Error::Io)
    }

    /// Connects to the manager at the TCP address `addr` with `key`
    /// (multiprocessing's `fromAddress`).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if nothing listens there, [`Error::Authentication`] if
    /// the keys differ.
    pub fn connect(addr: impl ToSocketAddrs, key: impl AsRef<[u8]>) -> Result<Self> {
        Self::connect_to(Address::tcp(addr)?, key)
    }

    /// Connects to the manager at `address` with `key`.
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect).
    pub fn connect_to(address: Address, key: impl AsRef<[u8]>) -> Result<Self> {
        let target = Target {
            address,
            key: key.as_ref().to_vec(),
        };
        let client = Client::connect(&target.address, &target.key)?;
        Ok(Self {
            target,
            line: Line(Mutex::new(Some(client))),
            process: Mutex::new(None),
            pid: None,
        })
    }

    fn launch(address: &Address, key: Vec<u8>) -> Result<Self> {
        let args = encode(&(address, &key))?;
        let handle = Builder::new().start_raw(MANAGER.to_owned(), Ok(args))?;
        let handle: ServerProcess = handle.cast();
        let address = handle.recv()?.map_err(|message| {
            Error::Io(std::io::Error::other(format!(
                "the manager cannot listen on {address}: {message}"
            )))
        })?;
        let mut manager = Self::connect_to(address, key)?;
        manager.pid = Some(handle.pid());
        *lock(&manager.process) = Some(handle);
        Ok(manager)
    }

    /// Where the manager listens.
    #[must_use]
    pub fn address(&self) -> &Address {
        &self.target.address
    }

    /// The key that clients must know. [`start`](Self::start) picks 32
    /// random bytes; keep it secret.
    #[must_use]
    pub fn key(&self) -> &[u8] {
        &self.target.key
    }

    /// The manager process's id, when this manager started it.
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// Stops the manager process, if this manager started it; its objects
    /// are gone, and proxies to them fail with [`Error::Disconnected`] or
    /// [`Error::Io`]. Calling it again does nothing; a manager reached with
    /// [`connect`](Self::connect) is left running.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the process could not be stopped.
    pub fn shutdown(&self) -> Result<()> {
        let process = lock(&self.process).take();
        if let Some(process) = process {
            process.kill()?;
            // Reaps it.
            drop(process);
        }
        Ok(())
    }

    /// Objects by name: creators that return the object of that name if it
    /// exists (checking it is of the same kind and types), and create it
    /// otherwise, with the initial values and capacity given (ignored for an
    /// object that exists). Programs that connect to one manager share
    /// objects so. Objects, named or not, live as long as the manager.
    #[must_use]
    pub fn named(&self, name: impl Into<String>) -> Named<'_> {
        Named {
            manager: self,
            name: name.into(),
        }
    }

    fn create<P>(
        &self,
        kind: Kind,
        types: &str,
        name: Option<String>,
        wrap: fn(Proxy) -> P,
    ) -> Result<P> {
        let op = Op::Create {
            kind,
            types: types.to_owned(),
            name,
        };
        let id: u64 = decode(&self.line.ask(&self.target, &op)?)?;
        Ok(wrap(Proxy {
            target: self.target.clone(),
            id,
            line: Line::default(),
        }))
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

impl fmt::Debug for Manager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Manager")
            .field("address", &self.target.address)
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

/// Locks `mutex`, whether or not a thread panicked while holding it.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Creators of objects by name, from [`Manager::named`].
#[derive(Debug)]
pub struct Named<'a> {
    manager: &'a Manager,
    name: String,
}

/// The creators, on [`Manager`] (a new object each time) and [`Named`]
/// (the object of that name).
macro_rules! creators {
    ($on:ty, |$this:ident| ($manager:expr, $name:expr)) => {
        impl $on {
            /// A shared map.
            ///
            /// # Errors
            ///
            /// [`Error::Remote`] if a named object of another kind or
            /// types exists; [`Error::Disconnected`] if the manager is gone.
            pub fn map<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned>(
                &self,
            ) -> Result<Map<K, V>> {
                let $this = self;
                $manager.create(
                    Kind::Map,
                    std::any::type_name::<Map<K, V>>(),
                    $name,
                    Map::wrap,
                )
            }

            /// A shared list holding `values`.
            ///
            /// # Errors
            ///
            /// As [`map`](Self::map).
            pub fn list<'v, T: Serialize + DeserializeOwned + 'v>(
                &self,
                values: impl IntoIterator<Item = &'v T>,
            ) -> Result<List<T>> {
                let $this = self;
                let values = values.into_iter().map(encode).collect::<Result<Vec<_>>>()?;
                $manager.create(
                    Kind::List { values },
                    std::any::type_name::<List<T>>(),
                    $name,
                    List::wrap,
                )
            }

            /// A shared queue, holding at most `capacity` values if set.
            ///
            /// # Errors
            ///
            /// As [`map`](Self::map).
            pub fn queue<T: Serialize + DeserializeOwned>(
                &self,
                capacity: Option<usize>,
            ) -> Result<Queue<T>> {
                let $this = self;
                $manager.create(
                    Kind::Queue { capacity },
                    std::any::type_name::<Queue<T>>(),
                    $name,
                    Queue::wrap,
                )
            }

            /// A shared value, starting as `value`.
            ///
            /// # Errors
            ///
            /// As [`map`](Self::map).
            pub fn value<T: Serialize + DeserializeOwned>(&self, value: &T) -> Result<Value<T>> {
                let $this = self;
                $manager.create(
                    Kind::Value {
                        value: encode(value)?,
                    },
                    std::any::type_name::<Value<T>>(),
                    $name,
                    Value::wrap,
                )
            }

            /// A shared namespace.
            ///
            /// # Errors
            ///
            /// As [`map`](Self::map).
            pub fn namespace(&self) -> Result<Namespace> {
                let $this = self;
                $manager.create(Kind::Namespace, "Namespace", $name, Namespace::wrap)
            }

            /// A shared lock (not reentrant: a proxy that holds it cannot
            /// take it again).
            ///
            /// # Errors
            ///
            /// As [`map`](Self::map).
            pub fn lock(&self) -> Result<Lock> {
                let $this = self;
                $manager.create(Kind::Lock { reentrant: false }, "Lock", $name, Lock::wrap)
            }

            /// A shared reentrant lock: the proxy that holds it may take it
            /// again, and releases it as many times.
            ///
            /// # Errors
            ///
            /// As [`map`](Self::map).
            pub fn rlock(&self) -> Result<Lock> {
                let $this = self;
                $manager.create(Kind::Lock { reentrant: true }, "RLock", $name, Lock::wrap)
            }

            /// A shared semaphore with a count of `value`.
            ///
            /// # Errors
            ///
            /// As [`map`](Self::map).
            pub fn semaphore(&self, value: u64) -> Result<Semaphore> {
                let $this = self;
                $manager.create(
                    Kind::Semaphore {
                        value,
                        bounded: false,
                    },
                    "Semaphore",
                    $name,
                    Semaphore::wrap,
                )
            }

            /// A shared semaphore with a count of `value` that may never be
            /// released past it.
            ///
            /// # Errors
            ///
            /// As [`map`](Self::map).
            pub fn bounded_semaphore(&self, value: u64) -> Result<Semaphore> {
                let $this = self;
                $manager.create(
                    Kind::Semaphore {
                        value,
                        bounded: true,
                    },
                    "BoundedSemaphore",
                    $name,
                    Semaphore::wrap,
                )
            }

            /// A shared condition variable over `lock` (a shared lock of
            /// this manager), or over a new reentrant lock of its own.
            ///
            /// # Errors
            ///
            /// As [`map`](Self::map).
            pub fn condition(&self, lock: Option<&Lock>) -> Result<Condition> {
                let $this = self;
                let kind = Kind::Condition {
                    lock: lock.map(|l| l.proxy.id),
                };
                $manager.create(kind, "Condition", $name, Condition::wrap)
            }

            /// A shared event, not set.
            ///
            /// # Errors
            ///
            /// As [`map`](Self::map).
            pub fn event(&self) -> Result<Event> {
                let $this = self;
                $manager.create(Kind::Event, "Event", $name, Event::wrap)
            }

            /// A shared array of numbers holding `values`.
            ///
            /// # Errors
            ///
            /// As [`map`](Self::map).
            pub fn array<T: Number>(
                &self,
                values: impl IntoIterator<Item = T>,
            ) -> Result<Array<T>> {
                let $this = self;
                let values = values
                    .into_iter()
                    .map(|v| encode(&v))
                    .collect::<Result<Vec<_>>>()?;
                $manager.create(
                    Kind::Array { values },
                    std::any::type_name::<Array<T>>(),
                    $name,
                    Array::wrap,
                )
            }

            /// A shared value of a type of your own, registered with
            /// `pproc::shared!` in the manager's program, starting
            /// as `value`.
            ///
            /// # Errors
            ///
            /// [`Error::Remote`] if the manager's program does not register
            /// `T`, or as [`map`](Self::map).
            pub fn shared<T: SharedType>(&self, value: &T) -> Result<Shared<T>> {
                let $this = self;
                $manager.create(
                    Kind::Custom {
                        name: T::NAME.to_owned(),
                        value: encode(value)?,
                    },
                    T::NAME,
                    $name,
                    Shared::wrap,
                )
            }
        }
    };
}

creators!(Manager, |this| (this, None));
creators!(Named<'_>, |this| (this.manager, Some(this.name.clone())));

/// The manager process's side: runs from the dispatcher with its channel to
/// the starting program. Returns the exit status.
pub(crate) fn serve_child(conn: &mut Conn) -> i32 {
    let Some(args) = first_frame(conn) else {
        return EXIT_PROTOCOL;
    };
    let Ok((address, key)) = decode::<(Address, Vec<u8>)>(&args) else {
        return EXIT_PROTOCOL;
    };
    let bound = Listener::bind(&address).and_then(|l| l.address(&address).map(|a| (l, a)));
    let listener = match bound {
        Ok((listener, bound)) => {
            if conn.send_value(tag::DATA, &Ok::<_, String>(bound)).is_err() {
                return 0;
            }
            listener
        }
        Err(err) => {
            let _ = conn.send_value(tag::DATA, &Err::<Address, _>(err.to_string()));
            return 0;
        }
    };
    let server = server::Server::new(key);
    let serving = std::thread::Builder::new()
        .name("pproc-manager".into())
        .spawn(move || server.run(&listener));
    if serving.is_err() {
        return EXIT_PROTOCOL;
    }
    // Serve until the starting program closes the channel (it also kills
    // this process when it shuts the manager down, or dies).
    while !conn.is_eof() {
        if conn.wait(None, crate::conn::Deadline::Never).is_err() || conn.fill().is_err() {
            break;
        }
    }
    0
}
