//! pprocess's `simple_managed_map_reusable.py`, in Rust: as
//! `pprocess_simple_managed_map`, with the calls run on reused processes
//! (pprocess's `reuse=1` and `MakeReusable`): 10 processes take the 100
//! calls between them.
//!
//! ```text
//! cargo run --release --example pprocess_simple_managed_map_reusable
//! ```

use std::time::Instant;

use pproc::{Error, Map, parallel};
use pproc_workspace::grid::{self, LIMIT, N};

/// A supposedly time-consuming calculation on `i` and `j`, with the
/// process that ran it.
#[parallel]
fn calculate(i: usize, j: usize) -> (usize, u32) {
    (grid::value(i, j), std::process::id())
}

fn main() -> pproc::Result<()> {
    let t = Instant::now();

    // Initialise the map with a limit on the number of children, reusing
    // them, and manage the calculate function.
    let mut results = Map::new(|(i, j)| calculate::call(i, j), grid::cells())
        .limit(LIMIT)
        .reuse(true);

    // Perform the work, reading the results by index.
    println!("Calculating...");
    let mut grid = Vec::with_capacity(N * N);
    let mut processes = std::collections::HashSet::new();
    for index in 0..N * N {
        match results.get(index) {
            Some(Ok(&(value, pid))) => {
                grid.push(value);
                processes.insert(pid);
            }
            Some(Err(err)) => {
                return Err(Error::Codec {
                    message: err.to_string(),
                });
            }
            None => break,
        }
    }

    // Show the results.
    grid::show(&grid, t)?;
    println!("Processes used: {}", processes.len());
    Ok(())
}
