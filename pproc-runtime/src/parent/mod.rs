//! The parent's side: calls, the options that start them, the handle of a
//! running child, and waiting on many handles at once.

pub(crate) mod builder;
pub(crate) mod call;
pub(crate) mod closure;
pub(crate) mod delivery;
pub(crate) mod function;
pub(crate) mod handle;
pub(crate) mod supervise;
