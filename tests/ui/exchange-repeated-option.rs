#[pproc::parallel]
fn square(x: u64) -> u64 {
    x * x
}

#[derive(pproc::Exchange)]
struct Results {
    #[store(from = square, from = square)]
    values: Vec<u64>,
}

fn main() {}
