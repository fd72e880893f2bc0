//! What manager clients ask and servers answer, after the handshake: an
//! [`Op`] and its [`Answer`], each one frame of the codec. What creating an
//! object takes ([`Kind`]) and the operations on one ([`ObjectOp`]) are
//! each kind's own, in [`objects`](super::objects).

use serde::{Deserialize, Serialize};

pub(crate) use super::objects::{Kind, ObjectOp};

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
