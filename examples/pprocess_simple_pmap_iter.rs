//! pprocess's `simple_pmap_iter.py`, in Rust: the 10×10 grid computed by a
//! parallel map, at most 10 children at a time, one second per cell
//! (`PPROCESS_DELAY` changes it), each result printed as soon as it and
//! those before it are in.
//!
//! A [`Map`] is an iterator: it yields in input order, and starts items as
//! results are taken.
//!
//! ```text
//! cargo run --release --example pprocess_simple_pmap_iter
//! ```

use std::io::Write;
use std::time::Instant;

use pproc::{Map, parallel};
use pproc_workspace::grid::{self, LIMIT, N};

/// A supposedly time-consuming calculation on `t`.
#[parallel]
fn calculate((i, j): (usize, usize)) -> usize {
    grid::value(i, j)
}

fn main() -> pproc::Result<()> {
    let t = Instant::now();

    // Initialise an array.
    let sequence = grid::cells();

    // Perform the work.
    println!("Calculating...");
    let results = Map::new(calculate::call, sequence)
        .limit(LIMIT)
        .reuse(false);

    // Show the results.
    let mut seen = Vec::new();
    for (i, result) in results.enumerate() {
        let result = result?;
        print!("{result}");
        if i % N == N - 1 {
            println!();
        } else {
            print!(" ");
        }
        std::io::stdout().flush().map_err(pproc::Error::Io)?;
        seen.push(result);
    }
    println!("Time taken: {}", t.elapsed().as_secs_f64());
    grid::check(&seen)
}
