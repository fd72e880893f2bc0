//! The collectors: many children at once, and what they deliver. The
//! exchange at the core (pprocess's `Exchange`), maps and queues over it,
//! the pool, background calls, and timers.

pub(crate) mod background;
pub(crate) mod exchange;
pub(crate) mod map;
pub(crate) mod pool;
pub(crate) mod progress;
pub(crate) mod timer;
