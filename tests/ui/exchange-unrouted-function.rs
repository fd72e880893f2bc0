use pproc::{parallel, Exchange};

#[parallel]
fn square(x: u64) -> u64 {
    x * x
}

#[parallel]
fn cube(x: u64) -> u64 {
    x * x * x
}

#[derive(Default, pproc::Exchange)]
struct Totals {
    #[store(from = square)]
    squares: Vec<u64>,
}

fn main() -> pproc::Result<()> {
    let mut ex = Exchange::new(Totals::default());
    ex.start(square::call(2))?;
    ex.start(cube::call(2))?;
    ex.finish()?;
    Ok(())
}
