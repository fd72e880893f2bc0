#[derive(pproc::Exchange)]
struct Results {
    #[store]
    values: Vec<u64>,
    #[store(errors)]
    failures: Vec<String>,
}

fn main() {}
