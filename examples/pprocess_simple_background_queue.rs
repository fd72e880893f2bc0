//! pprocess's `simple_background_queue.py`, in Rust: the whole 10×10 grid
//! computation (a queue of at most 10 children, one second per cell;
//! `PPROCESS_DELAY` changes it) runs in a background process reachable at
//! `target/task.socket`; this program, or a later run of it, connects there
//! and collects the result.
//!
//! ```text
//! cargo run --release --example pprocess_simple_background_queue              # both
//! cargo run --release --example pprocess_simple_background_queue -- --start   # start, exit
//! cargo run --release --example pprocess_simple_background_queue -- --reconnect
//! ```

use std::path::Path;
use std::time::Instant;

use pproc::{Background, Queue, parallel};
use pproc_workspace::grid::{self, LIMIT, N, assign};

/// A supposedly time-consuming calculation on `i` and `j`.
#[parallel]
fn calculate(i: usize, j: usize) -> (usize, usize, usize) {
    grid::calculate(i, j)
}

/// The whole computation, run in the background: a queue of calculations.
#[parallel]
fn task() -> Vec<usize> {
    // Initialise the communications queue with a limit on the number of
    // channels/processes, managing the calculate function.
    let queue = Queue::new(|(i, j)| calculate::call(i, j), grid::cells())
        .limit(LIMIT)
        .reuse(false);

    // Initialise an array, and store the results as they arrive.
    let mut results = vec![0; N * N];
    for result in queue {
        match result {
            Ok(cell) => assign(&mut results, cell),
            Err(err) => panic!("a calculation failed: {err}"),
        }
    }
    results
}

fn main() -> pproc::Result<()> {
    let t = Instant::now();
    let address = Path::new("target").join("task.socket");
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| args.iter().any(|a| a == name);

    if !flag("--reconnect") {
        // Perform the work in the background.
        std::fs::create_dir_all("target").map_err(pproc::Error::Io)?;
        // An address left by a task that was killed: nobody answers there.
        if address.exists() && std::os::unix::net::UnixStream::connect(&address).is_err() {
            std::fs::remove_file(&address).map_err(pproc::Error::Io)?;
        }
        pproc::start_background(&address, task::call())?;
        println!("Started the task at {}.", address.display());
    }

    if !flag("--start") {
        // Open a queue and reconnect to the task.
        println!("Opening a queue.");
        let queue = Background::<Vec<usize>>::connect(&address)?;

        // Wait for the results.
        println!("Waiting for persistent results");
        let mut results = Vec::new();
        for result in queue {
            results = result?; // should only be one element
        }

        // Show the results.
        grid::show(&results, t)?;
    }
    Ok(())
}
