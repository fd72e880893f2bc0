//! Empty: the `links` key in Cargo.toml, which keeps one copy of the
//! runtime per process, needs a build script.

fn main() {}
