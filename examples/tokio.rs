//! pproc from async code, on a current-thread tokio runtime: children
//! awaited as futures, a child's values as a `Stream`, a timeout that
//! kills the child it gives up on, a pool call and a map as a stream.
//! `cargo run --example tokio --features tokio`.

use std::time::Duration;

use futures::StreamExt;
use pproc::tokio::{AsyncHandle, JoinSet};
use pproc::{Channel, Map, Pool, parallel};

#[parallel]
fn collatz_steps(mut n: u64) -> u64 {
    let mut steps = 0;
    while n != 1 {
        n = if n.is_multiple_of(2) {
            n / 2
        } else {
            3 * n + 1
        };
        steps += 1;
    }
    steps
}

#[parallel]
fn primes(ch: Channel<u64>, below: u64) {
    for n in 2..below {
        if (2..n)
            .take_while(|d| d * d <= n)
            .all(|d| !n.is_multiple_of(d))
        {
            ch.send(&n).expect("the parent listens");
        }
    }
}

#[parallel]
fn sleepy(seconds: u64) -> u64 {
    std::thread::sleep(Duration::from_secs(seconds));
    seconds
}

fn main() -> pproc::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(pproc::Error::Io)?;
    runtime.block_on(async {
        // Twenty children, one thread, awaited as they end.
        let mut set = JoinSet::new();
        for n in 1..=20 {
            set.spawn(collatz_steps::call(n))?;
        }
        let mut longest = 0;
        while let Some(steps) = set.join_next().await {
            longest = longest.max(steps?);
        }
        println!("longest Collatz run below 21: {longest} steps");

        // A child's values as they come.
        let mut child = AsyncHandle::start(primes::call(60))?;
        let found: Vec<u64> = child.stream().map(Result::unwrap).collect().await;
        println!("primes below 60: {found:?}");

        // Giving up on a child kills it: nothing is left running.
        let slow = AsyncHandle::start(sleepy::call(60))?;
        let pid = slow.pid();
        let gave_up = tokio::time::timeout(Duration::from_millis(200), slow.join()).await;
        println!("child {pid} timed out: {}", gave_up.is_err());

        // A pool call and a map, awaited.
        let pool = Pool::new(2)?;
        println!(
            "27 takes {} steps",
            pool.start(collatz_steps::call(27))?.await?
        );
        let steps: Vec<u64> = pproc::tokio::stream(Map::new(collatz_steps::call, 1..=10))
            .map(Result::unwrap)
            .collect()
            .await;
        println!("steps for 1..=10: {steps:?}");
        Ok(())
    })
}
