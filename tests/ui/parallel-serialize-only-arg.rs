use pproc::parallel;

#[derive(serde::Serialize)]
struct Config {
    depth: u32,
}

#[parallel]
fn depth(config: Config) -> u32 {
    config.depth
}

fn main() {}
