//! The child's side: code that runs inside a child process. The prelude
//! every child goes through, the entry that runs a `#[parallel]` function
//! and reports how it ended, the reusable worker, and the child's end of
//! the channel.

pub(crate) mod channel;
pub(crate) mod entry;
pub(crate) mod panic;
pub(crate) mod prelude;
pub(crate) mod worker;
