//! pprocess's `simple1.py`, in Rust: the 10×10 grid computed sequentially
//! by a function, its results appended to a vector, one second per cell
//! (`PPROCESS_DELAY` changes it).
//!
//! ```text
//! cargo run --release --example pprocess_simple1
//! ```

use std::time::Instant;

use pproc_workspace::grid::{self, N};

/// A supposedly time-consuming calculation on `i` and `j`.
fn calculate(i: usize, j: usize) -> usize {
    std::thread::sleep(grid::delay());
    i * N + j
}

fn main() -> pproc::Result<()> {
    let t = Instant::now();

    // Initialise an array.
    let mut results = Vec::new();

    // Perform the work.
    println!("Calculating...");
    for i in 0..N {
        for j in 0..N {
            results.push(calculate(i, j));
        }
    }

    // Show the results.
    grid::show(&results, t)
}
