#[derive(pproc::Exchange)]
#[store(crate = pproc)]
#[store(crate = ::pproc)]
struct Results {
    #[store]
    values: Vec<u64>,
}

fn main() {}
