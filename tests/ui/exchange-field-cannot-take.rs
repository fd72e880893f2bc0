#[pproc::parallel]
fn square(x: u64) -> u64 {
    x * x
}

#[derive(pproc::Exchange)]
struct Results {
    #[store(from = square)]
    squares: Vec<String>,
}

fn main() {}
