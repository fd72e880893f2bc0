//! pprocess's `simple_persistent_managed.py`, in Rust: the 10×10 grid
//! computed by a background task at `target/task-managed.socket` that runs a
//! queue of at most 10 children (one second per cell; `PPROCESS_DELAY`
//! changes it) and sends each cell on its channel as it arrives; this
//! program, or a later run of it, reconnects and stores the cells.
//!
//! ```text
//! cargo run --release --example pprocess_simple_persistent_managed              # both
//! cargo run --release --example pprocess_simple_persistent_managed -- --start   # start, exit
//! cargo run --release --example pprocess_simple_persistent_managed -- --reconnect
//! ```

use std::path::Path;
use std::time::Instant;

use pproc::{Background, Channel, Queue, parallel};
use pproc_workspace::grid::{self, LIMIT, N, assign};

/// A supposedly time-consuming calculation on `i` and `j`.
#[parallel]
fn calculate(i: usize, j: usize) -> (usize, usize, usize) {
    grid::calculate(i, j)
}

/// The whole computation, run in the background: each cell is sent on the
/// persistent channel as soon as it is known.
#[parallel]
fn task(ch: Channel<(usize, usize, usize)>) {
    let queue = Queue::new(|(i, j)| calculate::call(i, j), grid::cells())
        .limit(LIMIT)
        .reuse(false);
    for cell in queue {
        let cell = cell.unwrap_or_else(|err| panic!("a calculation failed: {err}"));
        ch.send(&cell)
            .expect("the background child keeps every value");
    }
}

fn main() -> pproc::Result<()> {
    let t = Instant::now();
    let address = Path::new("target").join("task-managed.socket");
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| args.iter().any(|a| a == name);
    let mut results = vec![0; N * N];

    if !flag("--reconnect") {
        std::fs::create_dir_all("target").map_err(pproc::Error::Io)?;
        // An address left by a task that was killed: nobody answers there.
        if address.exists() && std::os::unix::net::UnixStream::connect(&address).is_err() {
            std::fs::remove_file(&address).map_err(pproc::Error::Io)?;
        }
        // Perform the work in the background, then let go of it.
        pproc::start_background(&address, task::call())?;
        println!("Closed original exchange.");
    }

    if !flag("--start") {
        // Reconnect to the task, and store the cells as they arrive.
        println!("Opening new exchange.");
        let cells = Background::connect(&address)?;
        println!("Waiting for persistent results");
        for cell in cells {
            assign(&mut results, cell?);
        }

        // Show the results.
        grid::show(&results, t)?;
    }
    Ok(())
}
