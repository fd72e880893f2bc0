//! pprocess's `simple_map.py`, in Rust: the 10×10 grid computed
//! sequentially with the built-in `map` over a sequence of `(i, j)`, one
//! second per cell (`PPROCESS_DELAY` changes it). The baseline for the
//! `pmap` examples: about 100 seconds.
//!
//! ```text
//! cargo run --release --example pprocess_simple_map
//! ```

use std::time::Instant;

use pproc_workspace::grid::{self, N};

/// A supposedly time-consuming calculation on `t`.
fn calculate((i, j): (usize, usize)) -> usize {
    grid::value(i, j)
}

fn main() -> pproc::Result<()> {
    let t = Instant::now();

    // Initialise an array.
    let sequence: Vec<(usize, usize)> = grid::cells().collect();
    assert_eq!(sequence.len(), N * N);

    // Perform the work.
    println!("Calculating...");
    let results: Vec<usize> = sequence.into_iter().map(calculate).collect();

    // Show the results.
    grid::show(&results, t)
}
