//! The runtime of [pproc](https://docs.rs/pproc): spawning, dispatch,
//! channels, framing and serialization.
//!
//! Depend on `pproc`, which re-exports everything here with its macros; this
//! crate's items are documented there.

// The layers, from the bottom: error and lock; wire (what both ends
// speak); process (the OS); registry; child (inside a child) and parent
// (the handle); collect (many children); manager; boot (the constructor
// that routes a child). Each imports only from the layers below it; see
// ARCHITECTURE.md.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod boot;
mod child;
mod collect;
mod error;
mod lock;
pub mod manager;
mod parent;
mod process;
mod registry;
mod remote;
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub mod tokio;
mod trace;
mod wire;

#[doc(hidden)]
pub mod private;

// Not public API: for the fuzz targets and the property tests.
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;

pub use child::channel::Channel;
pub use collect::background::{Background, Gathered, start_background};
pub use collect::exchange::{BatchSize, Exchange, Failure, Managed, Origin, Route, Store};
pub use collect::map::{Fork, Map, Queue, Task, fork, pmap};
pub use collect::pool::{Arrivals, Pending, Pool};
pub use collect::timer::{MAX_RATE_OVERLAP, Timer, interval, later, rate};
pub use error::{Error, Limit, Result};
pub use parent::builder::Builder;
pub use parent::call::Call;
pub use parent::closure::{call, closure, spawn};
pub use parent::delivery::{Delivery, Returns, Streams};
pub use parent::function::{ByName, Function};
pub use parent::handle::{Handle, Output};
pub use parent::supervise::{join_all, join_any, select};
pub use process::tree::{ChildInfo, Node, children, parent, tree, waitall};
pub use registry::{is_registered, registered};
pub use remote::{Binary, Cluster, HostInfo, Launcher, Prefix, Srun, Ssh};
pub use wire::bytes::Bytes;
pub use wire::conn::DEFAULT_MAX_FRAME;
pub use wire::frame::{
    EXIT_OUT_OF_MEMORY, EXIT_PROTOCOL, EXIT_STACK_OVERFLOW, EXIT_UNREGISTERED, EXIT_VERSION_SKEW,
};
pub use wire::outbox::DEFAULT_FLUSH_AFTER;
pub use wire::recv::Iter;
pub use wire::shm::free_shared_memory;

/// The progress bar crate pproc draws with, for a bar of your own
/// ([`Map::progress_bar`] and the like): the same version as pproc's.
#[cfg(feature = "progress")]
#[cfg_attr(docsrs, doc(cfg(feature = "progress")))]
pub use indicatif;
pub use wire::rpc::{Reply, Request, RequestId};
