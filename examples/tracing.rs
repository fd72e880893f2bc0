//! What pproc does, as `tracing` events: children started and ended, a
//! call that fails, a map's batches, a worker replaced after it died, and
//! a host (here the agent on this machine, through `env`) connected and
//! disconnected. `cargo run --example tracing --features tracing`.
//!
//! Each event has the target `pproc` and names the child by `function`
//! and `pid`; the subscriber here prints everything at `debug` and above.

use pproc::{Builder, Map, Prefix, parallel};
use tracing_subscriber::filter::LevelFilter;

#[parallel]
fn square(x: u64) -> u64 {
    x * x
}

/// Dies on 13, as a crash would.
#[parallel]
fn fragile(x: u64) -> u64 {
    if x == 13 {
        std::process::abort();
    }
    x + 1
}

fn main() -> pproc::Result<()> {
    tracing_subscriber::fmt()
        .with_max_level(LevelFilter::DEBUG)
        .with_target(true)
        .init();

    assert_eq!(square::start(7)?.join()?, 49);

    // A worker dies on one item: that item fails, a new worker goes on.
    let results: Vec<_> = Map::new(fragile::call, 0..20).limit(2).collect();
    assert_eq!(results.iter().filter(|r| r.is_err()).count(), 1);

    // A host: the agent on this machine, started through `env`.
    let cluster = pproc::Cluster::new().host(Prefix::new(["env"]).host("here"), 2);
    let remote = Builder::new().cluster(&cluster);
    assert_eq!(remote.start(square::call(3))?.join()?, 9);
    cluster.disconnect();
    Ok(())
}
