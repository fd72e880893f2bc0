//! pprocess's `simple_persistent_queue.py`, in Rust: the 10×10 grid as ten
//! background tasks, one per row, at `target/task-<i>.socket`, each running
//! a queue of at most 10 children (one second per cell; `PPROCESS_DELAY`
//! changes it); this program, or a later run of it, reconnects to all ten
//! and takes the rows as they arrive.
//!
//! ```text
//! cargo run --release --example pprocess_simple_persistent_queue              # both
//! cargo run --release --example pprocess_simple_persistent_queue -- --start   # start, exit
//! cargo run --release --example pprocess_simple_persistent_queue -- --reconnect
//! ```

use std::path::PathBuf;
use std::time::Instant;

use pproc::{Background, Queue, parallel};
use pproc_workspace::grid::{self, LIMIT, N};

/// A supposedly time-consuming calculation on `i` and `j`.
#[parallel]
fn calculate(i: usize, j: usize) -> (usize, usize, usize) {
    grid::calculate(i, j)
}

/// Row `i`, computed in the background.
#[parallel]
fn task(i: usize) -> (usize, Vec<usize>) {
    let queue = Queue::new(|j| calculate::call(i, j), 0..N)
        .limit(LIMIT)
        .reuse(false);
    let mut row = vec![0; N];
    for cell in queue {
        let (_, j, value) = cell.unwrap_or_else(|err| panic!("a calculation failed: {err}"));
        row[j] = value;
    }
    (i, row)
}

fn address(i: usize) -> PathBuf {
    PathBuf::from("target").join(format!("task-{i}.socket"))
}

fn main() -> pproc::Result<()> {
    let t = Instant::now();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| args.iter().any(|a| a == name);

    if !flag("--reconnect") {
        std::fs::create_dir_all("target").map_err(pproc::Error::Io)?;
        for i in 0..N {
            let address = address(i);
            // An address left by a task that was killed: nobody answers.
            if address.exists() && std::os::unix::net::UnixStream::connect(&address).is_err() {
                std::fs::remove_file(&address).map_err(pproc::Error::Io)?;
            }
            // A distinct background task for each part of the computation.
            pproc::start_background(&address, task::call(i))?;
        }
        println!("Discarded the callable.");
    }

    if !flag("--start") {
        // Open a queue and reconnect to the tasks.
        println!("Opening a queue.");
        let queue = Background::<(usize, Vec<usize>)>::gather((0..N).map(address))?;

        // Wait for the results.
        println!("Waiting for persistent results");
        let mut results = vec![Vec::new(); N];
        for (_, row) in queue {
            let (i, row) = row?;
            results[i] = row;
        }

        // Show the results.
        grid::show(&results.concat(), t)?;
    }
    Ok(())
}
