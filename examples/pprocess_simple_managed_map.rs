//! pprocess's `simple_managed_map.py`, in Rust: the 10×10 grid computed by
//! a parallel map of a managed callable, at most 10 children at a time, one
//! second per cell (`PPROCESS_DELAY` changes it), then read back by index.
//!
//! pprocess's `Map` is filled by calls to a managed callable and read with
//! `results[i*N:i*N+N]`. A [`Map`] takes the calls as an iterator, and
//! [`Map::get`] waits for the item at an index, as indexing does.
//!
//! ```text
//! cargo run --release --example pprocess_simple_managed_map
//! ```

use std::time::Instant;

use pproc::{Error, Map, parallel};
use pproc_workspace::grid::{self, LIMIT, N};

/// A supposedly time-consuming calculation on `i` and `j`.
#[parallel]
fn calculate(i: usize, j: usize) -> usize {
    grid::value(i, j)
}

fn main() -> pproc::Result<()> {
    let t = Instant::now();

    // Initialise the map with a limit on the number of children, managing
    // the calculate function; nothing runs until a result is asked for.
    let mut results = Map::new(|(i, j)| calculate::call(i, j), grid::cells())
        .limit(LIMIT)
        .reuse(false);

    // Perform the work, reading the results by index.
    println!("Calculating...");
    let mut grid = Vec::with_capacity(N * N);
    for index in 0..N * N {
        match results.get(index) {
            Some(Ok(&value)) => grid.push(value),
            Some(Err(err)) => {
                return Err(Error::Codec {
                    message: err.to_string(),
                });
            }
            None => break,
        }
    }

    // Show the results.
    grid::show(&grid, t)
}
