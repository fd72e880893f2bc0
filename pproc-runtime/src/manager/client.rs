//! The client's side of a manager: one authenticated connection
//! ([`Client`]), opened on first use and again after it broke ([`Line`]),
//! and the untyped core of every proxy ([`Proxy`]): where its object lives
//! ([`Target`]) and its id there.

use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::auth;
use super::protocol::{Answer, ObjectOp, Op};
use super::server;
use super::transport::{Address, Stream};
use crate::codec;
use crate::conn::{decode, encode};
use crate::error::{Error, Result};

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
        let mut line = super::lock(&self.0);
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
