//! The bottom layer: what both ends of a channel speak. The frame codec,
//! the tags and the bodies of frames, the `PPROC_CHILD` spec and its
//! roles, the framed connection, and deadlines.

pub(crate) mod bytes;
pub(crate) mod codec;
pub(crate) mod conn;
pub(crate) mod frame;
pub(crate) mod log;
pub(crate) mod outbox;
pub(crate) mod recv;
pub(crate) mod rpc;
pub(crate) mod shm;
pub(crate) mod spec;
pub(crate) mod wait;
