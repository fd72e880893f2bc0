//! pprocess's `simple2.py`, in Rust: the 10×10 grid computed sequentially
//! by a function that returns each cell with its place, one second per
//! cell (`PPROCESS_DELAY` changes it). The parallel examples keep this
//! function's shape.
//!
//! ```text
//! cargo run --release --example pprocess_simple2
//! ```

use std::time::Instant;

use pproc_workspace::grid::{self, N, calculate};

fn main() -> pproc::Result<()> {
    let t = Instant::now();

    // Initialise an array.
    let mut results = vec![0; N * N];

    // Perform the work.
    println!("Calculating...");
    for i in 0..N {
        for j in 0..N {
            let (i2, j2, result) = calculate(i, j);
            results[i2 * N + j2] = result;
        }
    }

    // Show the results.
    grid::show(&results, t)
}
