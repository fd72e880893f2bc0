use pproc::{parallel, Call, Exchange};

#[parallel]
fn square(x: u64) -> u64 {
    x * x
}

#[derive(Default, pproc::Exchange)]
struct Totals {
    #[store(from = square)]
    squares: Vec<u64>,
}

fn main() -> pproc::Result<()> {
    let mut ex = Exchange::new(Totals::default());
    let by_name: Call<u64> = Call::new(square::NAME, &(2_u64,));
    ex.start(by_name)?;
    ex.finish()?;
    Ok(())
}
