use pproc::{parallel, Exchange};

#[parallel]
fn square(x: u64) -> u64 {
    x * x
}

fn main() -> pproc::Result<()> {
    let mut ex = Exchange::new(Vec::<String>::new());
    ex.start(square::call(2))?;
    ex.finish()?;
    Ok(())
}
