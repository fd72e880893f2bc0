//! Pool costs, side by side in one run:
//!
//! - 10 000 tiny calls on a pool of one worker per core, against a new
//!   process per call (a `Map` without reuse, as many at a time);
//! - the round trip of one call on a pool (start, run, join), against a bare
//!   socketpair ping-pong of one byte between two processes: the floor any
//!   process pool sits on.
//!
//! `cargo bench --bench pool` (add `-- --quick` for a short run that only
//! proves it works).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use pproc::{Map, Pool, parallel};

#[parallel]
fn tiny(x: u32) -> u32 {
    x.wrapping_mul(2_654_435_761)
}

fn show(name: &str, samples: &mut [Duration], per: u32, unit: &str) -> Duration {
    samples.sort_unstable();
    let med = samples[samples.len() / 2];
    println!(
        "{name:<34} {:>10.3} ms  [{:.3} - {:.3}]  {:>8.2} us/{unit}",
        med.as_secs_f64() * 1e3,
        samples[0].as_secs_f64() * 1e3,
        samples[samples.len() - 1].as_secs_f64() * 1e3,
        med.as_secs_f64() * 1e6 / f64::from(per)
    );
    med
}

/// `n` one-byte round trips with a forked child that echoes them.
fn ping_pong(n: u32) -> Duration {
    let (mut ours, mut theirs) = UnixStream::pair().expect("socketpair");
    // SAFETY: the child only echoes bytes on its socket and leaves with
    // `_exit`; this program's other threads hold no lock it needs.
    match unsafe { nix::unistd::fork() }.expect("fork") {
        nix::unistd::ForkResult::Child => {
            drop(ours);
            let mut byte = [0_u8; 1];
            while theirs.read_exact(&mut byte).is_ok() && theirs.write_all(&byte).is_ok() {}
            // SAFETY: ends the child at once, running nothing of the parent's.
            unsafe { libc::_exit(0) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(theirs);
            let mut byte = [7_u8; 1];
            let start = Instant::now();
            for _ in 0..n {
                ours.write_all(&byte).expect("write");
                ours.read_exact(&mut byte).expect("read");
            }
            let took = start.elapsed();
            drop(ours);
            nix::sys::wait::waitpid(child, None).expect("waitpid");
            took
        }
    }
}

fn main() {
    let (cores, quick) = pproc_workspace::bench_preamble("pool");
    let (calls, trips, rounds): (u32, u32, usize) = if quick {
        (200, 200, 1)
    } else {
        (10_000, 5_000, 5)
    };
    let pool = Pool::new(cores).expect("pool");

    println!("{calls} tiny calls, {cores} at a time, {rounds} rounds (median [min - max])");
    let mut pooled = Vec::new();
    let mut fresh = Vec::new();
    for _ in 0..rounds {
        let start = Instant::now();
        let out = pool.map(tiny::call, 0..calls).expect("pool map");
        pooled.push(start.elapsed());
        assert_eq!(out.len(), calls as usize);
        let start = Instant::now();
        let out: Vec<u32> = Map::new(tiny::call, 0..calls)
            .limit(cores)
            .collect::<pproc::Result<_>>()
            .expect("map");
        fresh.push(start.elapsed());
        assert_eq!(out.len(), calls as usize);
    }
    let p = show("pool", &mut pooled, calls, "call");
    let f = show("a new process per call", &mut fresh, calls, "call");
    println!(
        "the pool is {:.1}x faster",
        f.as_secs_f64() / p.as_secs_f64()
    );

    println!();
    println!("{trips} round trips one after the other, {rounds} rounds (median [min - max])");
    let mut pool_trips = Vec::new();
    let mut bare = Vec::new();
    for _ in 0..rounds {
        let start = Instant::now();
        for i in 0..trips {
            let got = pool
                .start(tiny::call(i))
                .expect("start")
                .join()
                .expect("join");
            assert_eq!(got, tiny(i));
        }
        pool_trips.push(start.elapsed());
        bare.push(ping_pong(trips));
    }
    let p = show("pool: start + join", &mut pool_trips, trips, "trip");
    let b = show("socketpair ping-pong (floor)", &mut bare, trips, "trip");
    println!(
        "a pool round trip costs {:.1}x the floor",
        p.as_secs_f64() / b.as_secs_f64()
    );
    pool.shutdown().expect("shutdown");
}
