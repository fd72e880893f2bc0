#[derive(pproc::Exchange)]
#[store(crate = pproc, limit = 4)]
struct Results {
    #[store]
    values: Vec<u64>,
}

fn main() {}
