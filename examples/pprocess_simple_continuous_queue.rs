//! pprocess's `simple_continuous_queue.py`, in Rust: the 10×10 grid
//! computed by 10 children, one per row, each sending its cells one second
//! apart (`PPROCESS_DELAY` changes it) on its channel, every value taken
//! from a continuous queue as it arrives.
//!
//! ```text
//! cargo run --release --example pprocess_simple_continuous_queue
//! ```

use std::time::Instant;

use pproc::{Channel, Queue, parallel};
use pproc_workspace::grid::{self, LIMIT, N, assign};

/// A supposedly time-consuming calculation on `i`, a cell at a time.
#[parallel]
fn calculate(ch: Channel<(usize, usize, usize)>, i: usize) {
    for j in 0..N {
        if ch.send(&grid::calculate(i, j)).is_err() {
            return; // nobody reads any more
        }
    }
}

fn main() -> pproc::Result<()> {
    let t = Instant::now();

    // Initialise the communications queue with a limit on the number of
    // channels/processes, taking every value each child sends, and manage
    // the calculate function.
    let queue = Queue::new(calculate::call, 0..N)
        .limit(LIMIT)
        .reuse(false)
        .continuous(true);

    // Initialise an array.
    let mut results = vec![0; N * N];

    // Store the results as they arrive.
    println!("Calculating...");
    for result in queue {
        assign(&mut results, result?);
    }

    // Show the results.
    grid::show(&results, t)
}
