use pproc::parallel;

#[parallel(crate = "pproc")]
fn quoted(x: u32) -> u32 {
    x
}

fn main() {}
