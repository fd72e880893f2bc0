use pproc::parallel;

#[parallel]
fn length(text: &str) -> usize {
    text.len()
}

fn main() {}
