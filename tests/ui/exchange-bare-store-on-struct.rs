#[derive(pproc::Exchange)]
#[store]
struct Results {
    #[store]
    values: Vec<u64>,
}

fn main() {}
