//! pprocess's `simple_start_queue.py`, in Rust: the 10×10 grid computed by
//! calls started on a queue of at most 10 children, one second per cell
//! (`PPROCESS_DELAY` changes it), each result assigned as it arrives, with
//! the index of the call it answers.
//!
//! ```text
//! cargo run --release --example pprocess_simple_start_queue
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
    // channels/processes; each cell becomes a call.
    let calls = grid::cells().map(|(i, j)| calculate::call(i, j));
    let mut queue = Queue::new(|call| call, calls).limit(LIMIT).reuse(false);

    // Initialise an array.
    let mut results = vec![0; N * N];

    // Perform the work, storing the results as they arrive.
    println!("Calculating...");
    while let Some((index, result)) = queue.next_indexed() {
        let (i, j, value) = result?;
        debug_assert_eq!(index, i * N + j, "calls are numbered in input order");
        assign(&mut results, (i, j, value));
    }

    // Show the results.
    grid::show(&results, t)
}
