//! What manager clients ask and servers answer, after the handshake.

use serde::{Deserialize, Serialize};

use super::number::NumKind;

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
    },
    /// Runs an operation on a shared object.
    Call { object: u64, op: ObjectOp },
}

/// The server's answer to an [`Op`].
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Answer {
    /// Done: the operation's result, serialized.
    Done(Vec<u8>),
    /// A blocking call's timeout passed.
    Timeout,
    /// The call failed: why.
    Fault(String),
}

/// The kinds of shared objects, with what creating one takes. Values
/// travel serialized.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum Kind {
    Map,
    List {
        values: Vec<Vec<u8>>,
    },
    /// A FIFO queue, bounded when `capacity` is set.
    Queue {
        capacity: Option<usize>,
    },
    Value {
        value: Vec<u8>,
    },
    Namespace,
    Lock {
        reentrant: bool,
    },
    /// A bounded semaphore may never be released past its initial value.
    Semaphore {
        value: u64,
        bounded: bool,
    },
    /// Uses the lock `lock` (a shared lock), or a new reentrant one.
    Condition {
        lock: Option<u64>,
    },
    Event,
    /// A fixed-length array of numbers.
    Array {
        values: Vec<Vec<u8>>,
    },
    /// A registered user type, by its registered name.
    Custom {
        name: String,
        value: Vec<u8>,
    },
}

impl Kind {
    /// What the kind is called, in messages.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::Map => "map",
            Self::List { .. } => "list",
            Self::Queue { .. } => "queue",
            Self::Value { .. } => "value",
            Self::Namespace => "namespace",
            Self::Lock { .. } => "lock",
            Self::Semaphore { .. } => "semaphore",
            Self::Condition { .. } => "condition",
            Self::Event => "event",
            Self::Array { .. } => "array",
            Self::Custom { .. } => "custom value",
        }
    }
}

/// An operation on a shared object, of the object's kind. Values travel
/// serialized: the server does not know their types.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum ObjectOp {
    Map(MapOp),
    List(ListOp),
    Queue(QueueOp),
    Value(ValueOp),
    Namespace(NamespaceOp),
    Lock(LockOp),
    Semaphore(SemaphoreOp),
    Condition(ConditionOp),
    Event(EventOp),
    Array(ArrayOp),
    Custom(CustomOp),
}

/// What a shared map does.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum MapOp {
    /// Answers the value replaced, if any.
    Insert {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    /// Answers the value, if any.
    Get {
        key: Vec<u8>,
    },
    /// Answers the value removed, if any.
    Remove {
        key: Vec<u8>,
    },
    ContainsKey {
        key: Vec<u8>,
    },
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
    Get {
        timeout_ms: Option<u64>,
    },
    Len,
}

/// What a shared value does.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum ValueOp {
    /// Answers the value itself, not wrapped.
    Get,
    Set {
        value: Vec<u8>,
    },
    /// Answers the sum itself, not wrapped.
    Add {
        delta: Vec<u8>,
        kind: NumKind,
    },
}

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

/// What a shared lock does, for the client that asks. Timeouts are in
/// milliseconds; `None` waits as long as it takes.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub(crate) enum LockOp {
    Acquire { timeout_ms: Option<u64> },
    Release,
}

/// What a shared semaphore does. Timeouts are in milliseconds; `None`
/// waits as long as it takes.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub(crate) enum SemaphoreOp {
    Acquire {
        timeout_ms: Option<u64>,
    },
    Release,
    /// Answers the count.
    Value,
}

/// What a shared condition variable does. Timeouts are in milliseconds;
/// `None` waits as long as it takes.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub(crate) enum ConditionOp {
    /// An operation on its lock.
    Lock(LockOp),
    /// Answers whether it was notified.
    Wait { timeout_ms: Option<u64> },
    /// Wakes up to `n` waiters.
    Notify { n: u64 },
}

/// What a shared event does. Timeouts are in milliseconds; `None` waits as
/// long as it takes.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub(crate) enum EventOp {
    Set,
    Clear,
    IsSet,
    /// Answers whether the flag is set.
    Wait {
        timeout_ms: Option<u64>,
    },
}

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

/// What a shared value of a registered type does: the methods it exposes,
/// by name, since each type exposes its own.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum CustomOp {
    /// Answers the method's result.
    Call { method: String, args: Vec<u8> },
}

/// Wraps each kind's operations into an [`ObjectOp`].
macro_rules! object_ops {
    ($($kind:ident($op:ident)),*) => {
        $(impl From<$op> for ObjectOp {
            fn from(op: $op) -> Self {
                Self::$kind(op)
            }
        })*
    };
}

object_ops!(
    Map(MapOp),
    List(ListOp),
    Queue(QueueOp),
    Value(ValueOp),
    Namespace(NamespaceOp),
    Lock(LockOp),
    Semaphore(SemaphoreOp),
    Condition(ConditionOp),
    Event(EventOp),
    Array(ArrayOp),
    Custom(CustomOp)
);
