#[derive(pproc::Exchange)]
struct Results {
    #[store(form = square)]
    values: Vec<u64>,
}

fn main() {}
