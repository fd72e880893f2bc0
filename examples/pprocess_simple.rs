//! pprocess's `simple.py`, in Rust: the 10×10 grid computed sequentially,
//! one second per cell (`PPROCESS_DELAY` changes it). The baseline the
//! parallel examples are measured against: about 100 seconds.
//!
//! ```text
//! cargo run --release --example pprocess_simple
//! ```

use std::time::Instant;

use pproc_workspace::grid::{self, N};

fn main() -> pproc::Result<()> {
    let t = Instant::now();

    // Initialise an array.
    let mut results = vec![0; N * N];

    // Perform the work.
    println!("Calculating...");
    let delay = grid::delay();
    for i in 0..N {
        for j in 0..N {
            std::thread::sleep(delay);
            results[i * N + j] = i * N + j;
        }
    }

    // Show the results.
    grid::show(&results, t)
}
