fn keep(values: &mut Vec<u64>, value: u64) {
    values.push(value);
}

#[derive(pproc::Exchange)]
struct Results {
    #[store(with = keep)]
    values: Vec<u64>,
}

fn main() {}
