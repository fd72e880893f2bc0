//! The kinds of shared objects, one file each.

pub(crate) mod custom;
