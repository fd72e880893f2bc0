//! What pprocess's examples share: a `N`×`N` grid of `i * N + j`, each
//! cell taking `delay()` to compute, printed row by row with the time
//! taken.

use std::time::{Duration, Instant};

/// Array size.
pub const N: usize = 10;

/// The most children at once.
pub const LIMIT: usize = 10;

/// The variable that changes the delay, in seconds (default 1, as in
/// pprocess). Children read it too: they inherit the environment.
pub const DELAY_VAR: &str = "PPROCESS_DELAY";

/// How long each calculation takes: `PPROCESS_DELAY` seconds, or one.
///
/// # Panics
///
/// If `PPROCESS_DELAY` is set but is not a number of seconds.
#[must_use]
pub fn delay() -> Duration {
    std::env::var(DELAY_VAR).map_or(Duration::from_secs(1), |secs| {
        Duration::from_secs_f64(secs.parse().expect("PPROCESS_DELAY is seconds"))
    })
}

/// A supposedly time-consuming calculation on `i` and `j`.
#[must_use]
pub fn calculate(i: usize, j: usize) -> (usize, usize, usize) {
    (i, j, value(i, j))
}

/// The same calculation, returning the cell's value alone.
#[must_use]
pub fn value(i: usize, j: usize) -> usize {
    std::thread::sleep(delay());
    i * N + j
}

/// The grid's cells, row by row: pprocess's `sequence`.
pub fn cells() -> impl Iterator<Item = (usize, usize)> {
    (0..N).flat_map(|i| (0..N).map(move |j| (i, j)))
}

/// Puts a result in its place, as the examples' `store_data` does.
pub fn assign(grid: &mut [usize], (i, j, result): (usize, usize, usize)) {
    grid[i * N + j] = result;
}

/// Shows the results as pprocess does, and checks them.
///
/// # Errors
///
/// If a cell does not hold `i * N + j`.
pub fn show(results: &[usize], started: Instant) -> pproc::Result<()> {
    for row in results.chunks(N) {
        let row: Vec<String> = row.iter().map(ToString::to_string).collect();
        println!("{}", row.join(" "));
    }
    println!("Time taken: {}", started.elapsed().as_secs_f64());
    check(results)
}

/// Checks that every cell holds `i * N + j`.
///
/// # Errors
///
/// If a cell does not.
pub fn check(results: &[usize]) -> pproc::Result<()> {
    if results == (0..N * N).collect::<Vec<_>>() {
        Ok(())
    } else {
        Err(pproc::Error::Codec {
            message: "the grid does not hold i * N + j".into(),
        })
    }
}
