use pproc::parallel;

#[parallel(crate = pproc, crate = pproc)]
fn twice(x: u32) -> u32 {
    x
}

fn main() {}
