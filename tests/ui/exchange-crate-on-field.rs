#[derive(pproc::Exchange)]
struct Results {
    #[store(crate = pproc)]
    values: Vec<u64>,
}

fn main() {}
