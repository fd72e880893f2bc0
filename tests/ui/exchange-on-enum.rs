#[derive(pproc::Exchange)]
enum Results {
    Squares(Vec<u64>),
}

fn main() {}
