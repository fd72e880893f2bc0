//! What manager clients ask and servers answer, after the handshake.

use serde::{Deserialize, Serialize};

/// A request from a client.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Op {
    /// Creates a shared object, or finds the one of that name.
    Create {
        kind: Kind,
        /// The proxy's types, so that two programs that share a named
        /// object agree on what it holds.
        types: String,
        name: Option<String>,
        /// The initial value, serialized, where the kind takes one.
        init: Vec<u8>,
    },
    /// Calls a method of a shared object.
    Call {
        object: u64,
        method: String,
        args: Vec<u8>,
    },
}

/// The server's answer to an [`Op`].
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Answer {
    /// Done: the method's result, serialized.
    Done(Vec<u8>),
    /// A blocking call's timeout passed.
    Timeout,
    /// The call failed: why.
    Fault(String),
}

/// The kinds of shared objects, with what creating one takes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Kind {
    Map,
    List,
    /// A FIFO queue, bounded when `capacity` is set.
    Queue {
        capacity: Option<usize>,
    },
    Value,
    Namespace,
    Lock,
    RLock,
    Semaphore {
        value: u64,
    },
    BoundedSemaphore {
        value: u64,
    },
    /// Uses the lock `lock` (a `Lock` or `RLock`), or a new `RLock`.
    Condition {
        lock: Option<u64>,
    },
    Event,
    /// A fixed-length array of numbers.
    Array,
    /// A registered user type, by its registered name.
    Custom(String),
}
