#[pproc::parallel]
fn square(x: u64) -> u64 {
    x * x
}

#[pproc::parallel]
fn named(x: u64) -> String {
    x.to_string()
}

#[derive(pproc::Exchange)]
struct Results {
    #[store(from = square)]
    squares: Vec<u64>,
    #[store(from = named)]
    names: Vec<String>,
    #[store(errors)]
    failures: Vec<String>,
}

fn main() {}
