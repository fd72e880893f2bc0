//! pprocess's `simple_pmap.py`, in Rust: the 10×10 grid computed by a
//! parallel map over a sequence of `(i, j)`, at most 10 children at a time,
//! one second per cell (`PPROCESS_DELAY` changes it).
//!
//! `pproc::pmap(f, items)` runs with one child per core; pprocess's
//! `pmap(callable, sequence, limit=limit)` is `Map` with a `limit`, collected.
//! pproc reuses its children and sends them items in batches unless told
//! `reuse(false)`; the ports of pprocess's examples say so, to start a
//! process per item as pprocess does.
//!
//! ```text
//! cargo run --release --example pprocess_simple_pmap
//! ```

use std::time::Instant;

use pproc::{Map, parallel};
use pproc_workspace::grid::{self, LIMIT};

/// A supposedly time-consuming calculation on `t`.
#[parallel]
fn calculate((i, j): (usize, usize)) -> usize {
    grid::value(i, j)
}

fn main() -> pproc::Result<()> {
    let t = Instant::now();

    // Initialise an array.
    let sequence = grid::cells();

    // Perform the work.
    println!("Calculating...");
    let results: Vec<usize> = Map::new(calculate::call, sequence)
        .limit(LIMIT)
        .reuse(false)
        .collect::<pproc::Result<_>>()?;

    // Show the results.
    grid::show(&results, t)
}
