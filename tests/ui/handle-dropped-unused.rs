#![deny(unused_must_use)]

use pproc::parallel;

#[parallel]
fn work(x: u32) -> u32 {
    x * 2
}

fn main() -> pproc::Result<()> {
    // Started and killed at once: the handle is dropped.
    work::start(1)?;
    pproc::Map::new(work::call, 0..4);
    Ok(())
}
