//! The runtime of [pproc](https://docs.rs/pproc): spawning, dispatch,
//! channels, framing and serialization.
//!
//! Depend on `pproc`, which re-exports everything here with its macros; this
//! crate's items are documented there.

mod background;
mod call;
mod capture;
mod channel;
mod child;
mod codec;
mod conn;
mod error;
mod exchange;
mod handle;
pub mod manager;
mod map;
mod pool;
mod progress;
mod registry;
mod route;
mod rpc;
mod spawn;
mod supervise;
mod timer;
mod tree;
mod watchdog;

#[doc(hidden)]
pub mod private;

// Not public API: for the fuzz targets and the property tests.
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;

pub use background::{Background, Gathered, start_background};
pub use call::{Builder, Call, Delivery, Returns, Streams};
pub use channel::{Channel, Iter};
pub use child::{EXIT_OUT_OF_MEMORY, EXIT_PROTOCOL, EXIT_UNREGISTERED, EXIT_VERSION_SKEW};
pub use conn::DEFAULT_MAX_FRAME;
pub use error::{Error, Limit, Result};
pub use exchange::{Exchange, Failure, Managed, Origin, Store};
pub use handle::{Handle, Output};
pub use map::{Fork, Map, Queue, Task, fork, pmap};
pub use pool::{Arrivals, Pending, Pool};
pub use registry::{is_registered, registered};
pub use route::{ByName, Function, Route};
pub use rpc::{Reply, Request, RequestId};
pub use supervise::{join_all, join_any, select};
pub use timer::{MAX_RATE_OVERLAP, Timer, interval, later, rate};
pub use tree::{ChildInfo, Node, children, parent, tree, waitall};
