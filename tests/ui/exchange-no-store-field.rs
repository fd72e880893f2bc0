#[derive(pproc::Exchange)]
struct Results {
    values: Vec<u64>,
}

fn main() {}
