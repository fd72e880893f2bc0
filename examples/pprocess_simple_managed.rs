//! pprocess's `simple_managed.py`, in Rust: a 10×10 grid computed by a
//! managed callable on an exchange of at most 10 children, each call taking
//! one second (`PPROCESS_DELAY` changes it).
//!
//! pprocess wraps `calculate` with `MakeParallel` and `exchange.manage`, and
//! subclasses `Exchange` to write `store_data`. Here `#[parallel]` does the
//! first, [`Exchange::manage`] the second, and `#[derive(Exchange)]` with a
//! `with` function the third.
//!
//! ```text
//! cargo run --release --example pprocess_simple_managed
//! ```

use std::time::Instant;

use pproc::{Exchange, parallel};
use pproc_workspace::grid::{self, LIMIT, N, assign};

/// A supposedly time-consuming calculation on `i` and `j`.
#[parallel]
fn calculate(i: usize, j: usize) -> (usize, usize, usize) {
    grid::calculate(i, j)
}

/// The exchange's store: the array, assigned as results arrive.
#[derive(pproc::Exchange)]
struct Grid {
    #[store(from = calculate, with = assign)]
    d: Vec<usize>,
}

fn main() -> pproc::Result<()> {
    let t = Instant::now();

    // Initialise the exchange with a limit on the number of children, and
    // the array it assigns results to.
    let mut exchange = Exchange::new(Grid { d: vec![0; N * N] }).limit(LIMIT);

    // Wrap the calculate function and manage it.
    let mut calc = exchange.manage(|(i, j)| calculate::call(i, j));

    // Perform the work.
    println!("Calculating...");
    for i in 0..N {
        for j in 0..N {
            calc.call((i, j))?;
        }
    }

    // Wait for the results.
    println!("Finishing...");
    let results = exchange.finish()?.d;

    // Show the results.
    grid::show(&results, t)
}
