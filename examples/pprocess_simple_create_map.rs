//! pprocess's `simple_create_map.py`, in Rust: the 10×10 grid computed by
//! forked children on a map of at most 10 at a time, one second per cell
//! (`PPROCESS_DELAY` changes it), the results in input order.
//!
//! pprocess forks with `results.create()` and sends from the child; here
//! each item becomes a closure that [`pproc::fork`] runs in a forked child.
//! Forking is `unsafe` for the reasons [`Exchange::create`] gives; this
//! program starts no other thread, so none of them apply.
//!
//! ```text
//! cargo run --release --example pprocess_simple_create_map
//! ```
//!
//! [`Exchange::create`]: pproc::Exchange::create

use std::time::Instant;

use pproc::{Channel, Map};
use pproc_workspace::grid::{self, LIMIT};

fn main() -> pproc::Result<()> {
    let t = Instant::now();

    // Initialise the map with a limit on the number of children; each cell
    // is computed in a forked child.
    let results = Map::new(
        |(i, j)| {
            // SAFETY: this program has no other thread: no lock can be
            // held in the forked child.
            unsafe {
                pproc::fork(move |ch: Channel<usize>| {
                    // Calculation work.
                    let _ = ch.send(&grid::value(i, j));
                })
            }
        },
        grid::cells(),
    )
    .limit(LIMIT);

    // Perform the work.
    println!("Calculating...");
    let results: Vec<usize> = results.collect::<pproc::Result<_>>()?;

    // Show the results.
    grid::show(&results, t)
}
