use pproc::parallel;

struct Report {
    lines: usize,
}

#[parallel]
fn report(lines: usize) -> Report {
    Report { lines }
}

fn main() {}
