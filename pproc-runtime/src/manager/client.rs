//! The client's side of a manager: one authenticated connection
//! ([`Client`]), opened on first use and again after it broke ([`Line`]),
//! and the untyped core of every proxy ([`Proxy`]): where its object lives
//! ([`Target`]) and its id there. The typed proxies of each kind, in
//! [`objects`](super::objects), are made with [`proxy_type!`] and share
//! their collection methods through [`collection_methods!`].

use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::auth;
use super::protocol::{Answer, ObjectOp, Op};
use super::server;
use super::transport::{self, Address, Stream};
use crate::error::{Error, Result};
use crate::wire::codec;
use crate::wire::codec::{decode, encode};

/// How long a client waits for the manager's half of the handshake.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// One authenticated connection to a manager.
#[derive(Debug)]
pub(super) struct Client {
    stream: Stream,
}

impl Client {
    pub(super) fn connect(address: &Address, key: &[u8]) -> Result<Self> {
        let mut stream = Stream::connect(address).map_err(Error::Io)?;
        stream
            .set_read_timeout(Some(HANDSHAKE))
            .map_err(Error::Io)?;
        auth::connect_handshake(&mut stream, key, address)?;
        stream.set_read_timeout(None).map_err(Error::Io)?;
        crate::trace::manager_connected(address);
        transport::reached(address);
        Ok(Self { stream })
    }

    fn ask(&mut self, op: &Op) -> Result<Vec<u8>> {
        let gone = |err| match err {
            Error::Io(_) => Error::Disconnected,
            other => other,
        };
        codec::write_frame(&mut self.stream, &encode(op)?).map_err(gone)?;
        let answer = codec::read_frame(&mut self.stream, server::MAX_REQUEST).map_err(gone)?;
        match decode::<Answer>(&answer)? {
            Answer::Done(bytes) => Ok(bytes),
            Answer::Timeout => Err(Error::Timeout),
            Answer::Fault(message) => Err(Error::Remote { message }),
        }
    }
}

/// Where a proxy's object lives, and the key to reach it.
#[derive(Clone, Serialize, Deserialize)]
pub(super) struct Target {
    pub(super) address: Address,
    pub(super) key: Vec<u8>,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the key.
        f.debug_struct("Target")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

/// A connection opened on first use, and again after it broke.
#[derive(Debug, Default)]
pub(super) struct Line(pub(super) Mutex<Option<Client>>);

impl Line {
    pub(super) fn ask(&self, target: &Target, op: &Op) -> Result<Vec<u8>> {
        let mut line = crate::lock::lock(&self.0);
        if line.is_none() {
            *line = Some(Client::connect(&target.address, &target.key)?);
        }
        let Some(client) = line.as_mut() else {
            return Err(Error::Disconnected);
        };
        let answer = client.ask(op);
        if matches!(
            answer,
            Err(Error::Disconnected | Error::Io(_) | Error::Codec { .. })
        ) {
            // A broken or desynchronized connection is not used again.
            *line = None;
        }
        answer
    }
}

/// The untyped core of every proxy: the object's id where it lives, and a
/// connection of its own.
pub(super) struct Proxy {
    pub(super) target: Target,
    pub(super) id: u64,
    pub(super) line: Line,
}

impl Proxy {
    /// Runs `op` on the object; decodes what it answers.
    pub(super) fn ask<R: DeserializeOwned>(&self, op: impl Into<ObjectOp>) -> Result<R> {
        decode(&self.ask_raw(op)?)
    }

    /// Runs `op` on the object; what it answers, serialized.
    pub(super) fn ask_raw(&self, op: impl Into<ObjectOp>) -> Result<Vec<u8>> {
        let op = Op::Call {
            object: self.id,
            op: op.into(),
        };
        self.line.ask(&self.target, &op)
    }
}

impl Clone for Proxy {
    /// The same object, through a connection of its own.
    fn clone(&self) -> Self {
        Self {
            target: self.target.clone(),
            id: self.id,
            line: Line::default(),
        }
    }
}

impl Serialize for Proxy {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        (&self.target, self.id).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Proxy {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let (target, id) = <(Target, u64)>::deserialize(deserializer)?;
        Ok(Self {
            target,
            id,
            line: Line::default(),
        })
    }
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("address", &self.target.address)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// A timeout as the manager takes it: milliseconds, rounded up.
pub(super) fn millis(timeout: Option<Duration>) -> Option<u64> {
    timeout.map(|t| u64::try_from(t.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX))
}

/// `Ok(false)` for a timeout.
pub(super) fn in_time(result: Result<()>) -> Result<bool> {
    match result {
        Ok(()) => Ok(true),
        Err(Error::Timeout) => Ok(false),
        Err(err) => Err(err),
    }
}

/// A value the manager answered, serialized, if there is one.
pub(super) fn decode_some<T: DeserializeOwned>(value: Option<Vec<u8>>) -> Result<Option<T>> {
    value.map(|bytes| decode(&bytes)).transpose()
}

/// Values the manager answered, each serialized.
pub(super) fn decode_all<T: DeserializeOwned>(values: &[Vec<u8>]) -> Result<Vec<T>> {
    values.iter().map(|bytes| decode(bytes)).collect()
}

/// A typed proxy: a [`Proxy`] and the types its object holds, serialized
/// as the proxy, cloned with a connection of its own.
macro_rules! proxy_type {
    ($(#[$meta:meta])* $name:ident $(<$($t:ident),*>)?) => {
        $(#[$meta])*
        #[derive(::serde::Serialize, ::serde::Deserialize)]
        #[serde(bound = "")]
        pub struct $name $(<$($t),*>)? {
            pub(in crate::manager) proxy: $crate::manager::client::Proxy,
            #[serde(skip)]
            _types: ::std::marker::PhantomData<fn() -> ($($($t,)*)?)>,
        }

        impl $(<$($t),*>)? $name $(<$($t),*>)? {
            pub(in crate::manager) fn wrap(proxy: $crate::manager::client::Proxy) -> Self {
                Self { proxy, _types: ::std::marker::PhantomData }
            }
        }

        impl $(<$($t),*>)? Clone for $name $(<$($t),*>)? {
            /// The same shared object, through a connection of its own.
            fn clone(&self) -> Self {
                Self::wrap(self.proxy.clone())
            }
        }

        impl $(<$($t),*>)? ::std::fmt::Debug for $name $(<$($t),*>)? {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.debug_tuple(stringify!($name)).field(&self.proxy).finish()
            }
        }
    };
}

/// The methods that collection proxies share, in an `impl` block: `len`
/// and `is_empty` from the kind's operation `$len`, and `clear` and
/// `to_vec` where the kind has them; each summary is the kind's own.
macro_rules! collection_methods {
    (
        len: $len:expr, $len_doc:literal, $empty_doc:literal;
        $(clear: $clear:expr, $clear_doc:literal;)?
        $(to_vec: $to_vec:expr, $item:ty;)?
    ) => {
        #[doc = $len_doc]
        ///
        /// # Errors
        ///
        /// As [`Map::insert`](crate::manager::Map::insert).
        pub fn len(&self) -> $crate::error::Result<usize> {
            self.proxy.ask($len)
        }

        #[doc = $empty_doc]
        ///
        /// # Errors
        ///
        /// As [`Map::insert`](crate::manager::Map::insert).
        pub fn is_empty(&self) -> $crate::error::Result<bool> {
            self.len().map(|n| n == 0)
        }

        $(
            #[doc = $clear_doc]
            ///
            /// # Errors
            ///
            /// As [`Map::insert`](crate::manager::Map::insert).
            pub fn clear(&self) -> $crate::error::Result<()> {
                self.proxy.ask($clear)
            }
        )?

        $(
            /// A copy of every value.
            ///
            /// # Errors
            ///
            /// As [`Map::insert`](crate::manager::Map::insert).
            pub fn to_vec(&self) -> $crate::error::Result<Vec<$item>> {
                let values: Vec<Vec<u8>> = self.proxy.ask($to_vec)?;
                $crate::manager::client::decode_all(&values)
            }
        )?
    };
}

pub(super) use {collection_methods, proxy_type};
