//! Exchange costs, side by side in one run:
//!
//! - `ready()` with 1, 100 and 1000 idle children: the epoll set pproc uses
//!   against `poll(2)` over every child's socket (what an exchange without
//!   epoll pays on each wait);
//! - 2000 tiny calls, two at a time: reused worker processes against a new
//!   process per call.
//!
//! `cargo bench --bench exchange` (add `-- --quick` for a short run that
//! only proves it works).

use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use pproc::{Channel, Exchange, Handle, Streams, parallel};

/// Waits for a word from the parent that never comes: an idle child.
#[parallel]
fn idle(ch: Channel<(), ()>) {
    let _ = ch.recv();
}

#[parallel]
fn tiny(x: u32) -> u32 {
    x.wrapping_mul(2_654_435_761)
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

fn spread(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort_unstable();
    let n = samples.len();
    (samples[n / 10], samples[(n * 9 / 10).min(n - 1)])
}

fn micros(d: Duration) -> String {
    format!("{:>9.2} us", d.as_secs_f64() * 1e6)
}

/// `ready()` on an exchange of `n` idle children, against `poll(2)` over
/// their sockets, `runs` times each.
fn ready_row(n: usize, runs: usize) {
    let handles: Vec<Handle<(), (), (), Streams>> =
        (0..n).map(|_| idle::start().expect("start")).collect();
    let fds: Vec<i32> = handles.iter().map(AsRawFd::as_raw_fd).collect();
    let mut naive = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        let mut set: Vec<PollFd<'_>> = fds
            .iter()
            // SAFETY: the handles own these descriptors and outlive the poll.
            .map(|&fd| PollFd::new(unsafe { BorrowedFd::borrow_raw(fd) }, PollFlags::POLLIN))
            .collect();
        let ready = poll(&mut set, PollTimeout::ZERO).expect("poll");
        naive.push(start.elapsed());
        assert_eq!(ready, 0);
    }
    let mut ex = Exchange::new(Vec::<()>::new());
    for h in handles {
        ex.add(h).expect("add");
    }
    let mut epoll = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        let ready = ex.ready(Some(Duration::ZERO)).expect("ready");
        epoll.push(start.elapsed());
        assert!(ready.is_empty());
    }
    let (e, n_) = (median(epoll.clone()), median(naive.clone()));
    let (e10, e90) = spread(epoll);
    let (n10, n90) = spread(naive);
    println!(
        "{n:>8}   {}  [{} - {}]   {}  [{} - {}]   {:>6.1}x",
        micros(e),
        micros(e10),
        micros(e90),
        micros(n_),
        micros(n10),
        micros(n90),
        n_.as_secs_f64() / e.as_secs_f64()
    );
    // Dropping the exchange kills and reaps the idle children.
}

/// Runs `calls` tiny calls two at a time; returns the wall time.
fn calls_row(calls: u32, reuse: bool) -> Duration {
    let start = Instant::now();
    let mut ex = Exchange::new(Vec::new()).limit(2).reuse(reuse);
    for x in 0..calls {
        ex.start(tiny::call(x)).expect("start");
    }
    let out = ex.finish().expect("finish");
    assert_eq!(out.len(), calls as usize);
    start.elapsed()
}

fn main() {
    let (_, quick) = pproc_workspace::bench_preamble("exchange");
    let (sizes, runs, calls, rounds): (&[usize], usize, u32, usize) = if quick {
        (&[1, 10], 20, 100, 1)
    } else {
        (&[1, 100, 1000], 500, 2000, 5)
    };
    println!("ready() with idle children, {runs} runs each (median [p10 - p90])");
    println!(
        "children   epoll: pproc ready()                    poll(2) over every socket                 ratio"
    );
    for &n in sizes {
        ready_row(n, runs);
    }
    println!();
    println!("{calls} tiny calls, 2 at a time, {rounds} rounds (median [min - max])");
    let mut reused = Vec::new();
    let mut fresh = Vec::new();
    for _ in 0..rounds {
        reused.push(calls_row(calls, true));
        fresh.push(calls_row(calls, false));
    }
    let show = |name: &str, samples: &[Duration]| {
        let mut s = samples.to_vec();
        s.sort_unstable();
        let med = s[s.len() / 2];
        println!(
            "{name:<26} {:>9.1} ms  [{:.1} - {:.1}]  {:>7.1} us/call",
            med.as_secs_f64() * 1e3,
            s[0].as_secs_f64() * 1e3,
            s[s.len() - 1].as_secs_f64() * 1e3,
            med.as_secs_f64() * 1e6 / f64::from(calls)
        );
        med
    };
    let r = show("reused processes", &reused);
    let f = show("a new process per call", &fresh);
    println!("reuse is {:.1}x faster", f.as_secs_f64() / r.as_secs_f64());
}
