use pproc::parallel;

struct Config {
    depth: u32,
}

#[parallel]
fn depth(config: Config) -> u32 {
    config.depth
}

fn main() -> pproc::Result<()> {
    let got = depth::start(Config { depth: 3 })?.join()?;
    assert_eq!(got, 3);
    let _ = pproc::Map::new(depth::call, [Config { depth: 1 }]);
    Ok(())
}
