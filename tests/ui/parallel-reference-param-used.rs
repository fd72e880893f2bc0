use pproc::parallel;

#[parallel]
fn length(text: &str) -> usize {
    text.len()
}

fn main() -> pproc::Result<()> {
    let n: usize = length::start("four")?.join()?;
    assert_eq!(n, length("four"));
    Ok(())
}
