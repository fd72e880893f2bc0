//! The OS layer: starting child processes (re-executed or forked), the
//! process as the OS knows it, its limits and deadline, its captured
//! output, and the family tree. Nothing here speaks the protocol.

pub(crate) mod capture;
pub(crate) mod child;
pub(crate) mod fork;
pub(crate) mod limits;
pub(crate) mod reaper;
pub(crate) mod setup;
pub(crate) mod spawn;
pub(crate) mod tree;
pub(crate) mod watchdog;
