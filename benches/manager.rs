//! Small operations through a manager's proxies, over a local socket and
//! over TCP loopback, side by side with Python's `multiprocessing` manager
//! doing the same work (where `python3` is on the PATH).
//!
//! Every operation below is one round trip to the manager process: a map
//! insert and a map get, a queue put then get (two), an atomic counter
//! increment. Python has no atomic increment on a shared value: its
//! `v.value += 1` is a get and a set (two round trips, and not atomic), shown
//! as such.
//!
//! `cargo bench --bench manager` (add `-- --quick` for a short run that only
//! proves it works).

use std::process::Command;
use std::time::{Duration, Instant};

use pproc::manager::{Address, Manager};

/// Python's side: the same operations on `multiprocessing.Manager()`; prints
/// one line per operation, `name seconds`.
const PYTHON: &str = r#"
import sys, time
from multiprocessing import Manager
n = int(sys.argv[1])
def timed(name, f):
    start = time.perf_counter()
    f()
    print(name, time.perf_counter() - start, flush=True)
if __name__ == "__main__":
    with Manager() as m:
        d = m.dict(); q = m.Queue(); v = m.Value("i", 0)
        def insert():
            for i in range(n): d[i] = i
        def get():
            for i in range(n): d[i]
        def queue():
            for i in range(n): q.put(i); q.get()
        def add():
            for i in range(n): v.value += 1
        timed("insert", insert); timed("get", get); timed("queue", queue); timed("add", add)
"#;

fn python(n: u32) -> Option<Vec<(String, Duration)>> {
    let out = Command::new("python3")
        .args(["-c", PYTHON, &n.to_string()])
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!("python3 failed: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    String::from_utf8(out.stdout)
        .ok()?
        .lines()
        .map(|line| {
            let (name, secs) = line.split_once(' ')?;
            Some((name.to_owned(), Duration::from_secs_f64(secs.parse().ok()?)))
        })
        .collect()
}

fn per_op(total: Duration, n: u32) -> f64 {
    total.as_secs_f64() * 1e6 / f64::from(n)
}

/// Runs the four operations `n` times each on `manager`.
fn pproc_ops(manager: &Manager, n: u32) -> Vec<(&'static str, Duration)> {
    let map = manager.map::<u32, u32>().expect("map");
    let queue = manager.queue::<u32>(None).expect("queue");
    let counter = manager.value(&0_i64).expect("value");
    let mut out = Vec::new();
    let start = Instant::now();
    for i in 0..n {
        map.insert(&i, &i).expect("insert");
    }
    out.push(("insert", start.elapsed()));
    let start = Instant::now();
    for i in 0..n {
        assert_eq!(map.get(&i).expect("get"), Some(i));
    }
    out.push(("get", start.elapsed()));
    let start = Instant::now();
    for i in 0..n {
        queue.put(&i).expect("put");
        assert_eq!(queue.get().expect("get"), i);
    }
    out.push(("queue", start.elapsed()));
    let start = Instant::now();
    for _ in 0..n {
        counter.add(1).expect("add");
    }
    out.push(("add", start.elapsed()));
    assert_eq!(counter.get().expect("get"), i64::from(n));
    out
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

fn main() {
    let (_, quick) = pproc_workspace::bench_preamble("manager");
    let (n, rounds): (u32, usize) = if quick { (200, 1) } else { (20_000, 5) };
    let local = Manager::start().expect("a local manager");
    let tcp = Manager::serve("127.0.0.1:0", b"bench key").expect("a TCP manager");
    let Address::Tcp(addr) = tcp.address().clone() else {
        unreachable!("a TCP manager listens on TCP");
    };
    let remote = Manager::connect(addr, b"bench key").expect("connect");

    let names = ["insert", "get", "queue", "add"];
    let mut unix: Vec<Vec<Duration>> = vec![Vec::new(); names.len()];
    let mut over_tcp: Vec<Vec<Duration>> = vec![Vec::new(); names.len()];
    for _ in 0..rounds {
        for (i, (_, took)) in pproc_ops(&local, n).into_iter().enumerate() {
            unix[i].push(took);
        }
        for (i, (_, took)) in pproc_ops(&remote, n).into_iter().enumerate() {
            over_tcp[i].push(took);
        }
    }
    let py = python(n);
    println!("{n} operations each, {rounds} rounds, median per operation (us)");
    println!(
        "{:<30} {:>14} {:>14} {:>16} {:>10}",
        "operation", "pproc (unix)", "pproc (tcp)", "python manager", "vs python"
    );
    let labels = [
        "map insert",
        "map get",
        "queue put + get",
        "counter increment",
    ];
    for (i, name) in names.iter().enumerate() {
        let ours = per_op(median(unix[i].clone()), n);
        let tcp_us = per_op(median(over_tcp[i].clone()), n);
        let theirs = py
            .as_ref()
            .and_then(|py| py.iter().find(|(p, _)| p == name))
            .map(|(_, d)| per_op(*d, n));
        match theirs {
            Some(theirs) => println!(
                "{:<30} {ours:>14.2} {tcp_us:>14.2} {theirs:>16.2} {:>9.1}x",
                labels[i],
                theirs / ours
            ),
            None => println!(
                "{:<30} {ours:>14.2} {tcp_us:>14.2} {:>16} {:>10}",
                labels[i], "(no python3)", "-"
            ),
        }
    }
    println!("(python's counter increment is a get and a set, not atomic)");
    local.shutdown().expect("shutdown");
    tcp.shutdown().expect("shutdown");
}
