//! pprocess's `simple_start.py`, in Rust: the 10×10 grid computed by
//! channel-style functions started on an exchange of at most 10 children,
//! each taking one second (`PPROCESS_DELAY` changes it).
//!
//! In pprocess, `calculate` takes a channel and sends its result on it,
//! and a subclass of `Exchange` receives it in `store_data`. Here the
//! channel is `calculate`'s first parameter, `exchange.start` queues the
//! calls over the limit, and `#[derive(Exchange)]` routes each value sent
//! to the array.
//!
//! ```text
//! cargo run --release --example pprocess_simple_start
//! ```

use std::time::Instant;

use pproc::{Channel, Exchange, parallel};
use pproc_workspace::grid::{self, LIMIT, N, assign};

/// A supposedly time-consuming calculation on `i` and `j`, using `ch` to
/// communicate with the parent process.
#[parallel]
fn calculate(ch: Channel<(usize, usize, usize)>, i: usize, j: usize) {
    // The parent reads one value; if it is gone, nobody wants this one.
    let _ = ch.send(&grid::calculate(i, j));
}

/// The exchange's store: the array, assigned as values arrive.
#[derive(pproc::Exchange)]
struct MyExchange {
    #[store(from = calculate, with = assign)]
    d: Vec<usize>,
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
            exchange.start(calculate::call(i, j))?;
        }
    }

    // Wait for the results.
    println!("Finishing...");
    let results = exchange.finish()?.d;

    // Show the results.
    grid::show(&results, t)
}
