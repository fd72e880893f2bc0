use pproc::parallel;

#[parallel(retry = 3)]
fn flaky(x: u32) -> u32 {
    x
}

fn main() {}
