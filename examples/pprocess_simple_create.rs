//! pprocess's `simple_create.py`, in Rust: the 10×10 grid computed by
//! forked children (`exchange.create`), at most 10 at a time, each taking
//! one second (`PPROCESS_DELAY` changes it).
//!
//! pprocess's `create` returns the channel in the child and `None` in the
//! parent, and the child must call `pprocess.exit` itself. Here the child's
//! work is a closure: `create` runs it in the forked child, which then
//! exits, and the parent goes on. Forking is `unsafe` in Rust for the
//! reasons its documentation gives; this program has no other thread, so
//! none of them apply. The store is written by hand, as pprocess's
//! `store_data` is.
//!
//! ```text
//! cargo run --release --example pprocess_simple_create
//! ```

use std::time::Instant;

use pproc::{Channel, Exchange, Origin, Store};
use pproc_workspace::grid::{self, LIMIT, N};

/// The exchange's store: the array, assigned as values arrive.
struct MyExchange {
    d: Vec<usize>,
}

impl Store<(usize, usize, usize)> for MyExchange {
    fn store(
        &mut self,
        (i, j, result): (usize, usize, usize),
        _: &Origin<'_>,
    ) -> pproc::Result<()> {
        self.d[i * N + j] = result;
        Ok(())
    }
}

fn main() -> pproc::Result<()> {
    let t = Instant::now();

    // Initialise the communications exchange with a limit on the number of
    // channels/processes, and the array it assigns values to.
    let mut exchange = Exchange::new(MyExchange { d: vec![0; N * N] }).limit(LIMIT);

    // Perform the work.
    println!("Calculating...");
    for i in 0..N {
        for j in 0..N {
            // SAFETY: this program has no other thread: no lock can be
            // held in the forked child.
            unsafe {
                exchange.create(move |ch: Channel<(usize, usize, usize)>| {
                    // Calculation work.
                    let _ = ch.send(&grid::calculate(i, j));
                })?;
            }
        }
    }

    // Wait for the results.
    println!("Finishing...");
    let results = exchange.finish()?.d;

    // Show the results.
    grid::show(&results, t)
}
