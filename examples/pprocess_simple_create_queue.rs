//! pprocess's `simple_create_queue.py`, in Rust: the 10×10 grid computed by
//! forked children on a queue of at most 10 at a time, one second per cell
//! (`PPROCESS_DELAY` changes it), each result assigned as it arrives.
//!
//! As `pprocess_simple_create_map`, with a [`Queue`]. This program starts
//! no other thread, so forking is safe here.
//!
//! ```text
//! cargo run --release --example pprocess_simple_create_queue
//! ```

use std::time::Instant;

use pproc::{Channel, Queue};
use pproc_workspace::grid::{self, LIMIT, N, assign};

fn main() -> pproc::Result<()> {
    let t = Instant::now();

    // Initialise the communications queue with a limit on the number of
    // channels/processes; each cell is computed in a forked child.
    let queue = Queue::new(
        |(i, j)| {
            // SAFETY: this program has no other thread: no lock can be
            // held in the forked child.
            unsafe {
                pproc::fork(move |ch: Channel<(usize, usize, usize)>| {
                    // Calculation work.
                    let _ = ch.send(&grid::calculate(i, j));
                })
            }
        },
        grid::cells(),
    )
    .limit(LIMIT);

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
