use pproc::parallel;

#[parallel]
fn square(x: u64) -> u64 {
    x * x
}

fn main() -> pproc::Result<()> {
    let squares: Vec<u64> = pproc::Map::new(square::call, 0..4)
        .progress(true)
        .collect::<pproc::Result<_>>()?;
    assert_eq!(squares.len(), 4);
    let pool = pproc::Pool::new(2)?.progress(true);
    drop(pool);
    Ok(())
}
