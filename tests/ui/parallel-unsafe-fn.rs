use pproc::parallel;

#[parallel]
unsafe fn raw(x: u32) -> u32 {
    x
}

fn main() {}
