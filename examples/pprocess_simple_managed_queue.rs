//! pprocess's `simple_managed_queue.py`, in Rust: the 10×10 grid computed by
//! a managed callable on a queue of at most 10 children, one second per cell
//! (`PPROCESS_DELAY` changes it), each result assigned as it arrives.
//!
//! A [`Queue`] is an iterator that yields results in the order they
//! arrive.
//!
//! ```text
//! cargo run --release --example pprocess_simple_managed_queue
//! ```

use std::time::Instant;

use pproc::{Queue, parallel};
use pproc_workspace::grid::{self, LIMIT, N, assign};

/// A supposedly time-consuming calculation on `i` and `j`.
#[parallel]
fn calculate(i: usize, j: usize) -> (usize, usize, usize) {
    grid::calculate(i, j)
}

fn main() -> pproc::Result<()> {
    let t = Instant::now();

    // Initialise the communications queue with a limit on the number of
    // channels/processes, managing the calculate function.
    let queue = Queue::new(|(i, j)| calculate::call(i, j), grid::cells())
        .limit(LIMIT)
        .reuse(false);

    // Initialise an array.
    let mut results = vec![0; N * N];

    // Perform the work, storing the results as they arrive.
    println!("Calculating...");
    for result in queue {
        assign(&mut results, result?);
    }

    // Show the results.
    grid::show(&results, t)
}
