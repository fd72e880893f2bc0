use pproc::{parallel, Exchange};

#[parallel]
fn square(x: u64) -> u64 {
    x * x
}

#[derive(Default, pproc::Exchange)]
struct Results {
    #[store(form = square)]
    squares: Vec<u64>,
}

fn main() -> pproc::Result<()> {
    let mut ex = Exchange::new(Results::default());
    ex.start(square::call(3))?;
    let results: Results = ex.finish()?;
    assert_eq!(results.squares, [9]);
    Ok(())
}
