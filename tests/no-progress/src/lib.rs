//! Nothing: the test in `tests/` is the point (see Cargo.toml).
