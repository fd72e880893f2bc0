//! `Pool` with real workers: any function, call after call; dead workers
//! fail only their call and are replaced; recycling; shutdown and drop
//! reap everyone.
//!
//! Tests count this process's children: every test holds `serial()`, so that
//! no other test's children are counted with theirs.

use std::collections::HashSet;
use std::time::Duration;

use pproc::{Error, Pool, parallel};
use pproc_workspace::{children, open_fds, serial};

#[parallel]
fn square(x: u64) -> u64 {
    x * x
}

#[parallel]
fn shout(s: String) -> String {
    s.to_uppercase()
}

/// The process that ran it.
#[parallel]
fn whoami() -> u32 {
    std::process::id()
}

/// Kills its own process.
#[parallel]
fn die() -> u32 {
    // SAFETY: raise(3) with a valid signal.
    unsafe { libc::raise(libc::SIGKILL) };
    0
}

/// Aborts, as a `panic = "abort"` build or a failed allocation does.
#[parallel]
fn abort() -> u32 {
    std::process::abort()
}

/// Caps its own address space at `mib` MiB, then allocates past it: the
/// allocator fails and the process aborts, as it would out of memory.
#[parallel]
fn exhaust(mib: u64) -> usize {
    let cap = mib << 20;
    let limit = libc::rlimit {
        rlim_cur: cap,
        rlim_max: cap,
    };
    // SAFETY: setrlimit reads a valid rlimit struct.
    assert_eq!(
        unsafe { libc::setrlimit(libc::RLIMIT_AS, &raw const limit) },
        0
    );
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(vec![1; 64 << 20]);
        std::hint::black_box(&hoard);
    }
}

#[parallel]
fn boom(x: u64) -> u64 {
    assert!(x != 13, "unlucky {x}");
    x
}

#[parallel]
fn nap(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

const fn assert_send_sync<T: Send + Sync>() {}
const _: () = assert_send_sync::<Pool>();

#[test]
fn workers_start_up_front_and_run_any_function() {
    let _serial = serial();
    let pool = Pool::new(3).unwrap();
    assert_eq!(children().len(), 3, "three workers, ready");
    let a = pool.start(square::call(12)).unwrap();
    let b = pool.start(shout::call("pool".into())).unwrap();
    assert_eq!(b.join().unwrap(), "POOL");
    assert_eq!(a.join().unwrap(), 144);
    let pids: HashSet<u32> = (0..30)
        .map(|_| pool.start(whoami::call()).unwrap())
        .collect::<Vec<_>>()
        .into_iter()
        .map(|p| p.join().unwrap())
        .collect();
    assert!(pids.len() <= 3, "{} processes for 30 calls", pids.len());
    assert_eq!(children().len(), 3, "no more processes than workers");
    pool.shutdown().unwrap();
    assert_eq!(children(), Vec::<u32>::new());
}

#[test]
fn a_dead_worker_fails_only_its_call_and_is_replaced() {
    let _serial = serial();
    let fds = open_fds();
    let pool = Pool::new(2).unwrap();
    let before: HashSet<u32> = children().into_iter().collect();
    let doomed = pool.start(die::call()).unwrap();
    let fine: Vec<_> = (0..10)
        .map(|i| pool.start(square::call(i)).unwrap())
        .collect();
    assert!(matches!(doomed.join(), Err(Error::Signaled { signal: 9 })));
    for (i, p) in fine.into_iter().enumerate() {
        assert_eq!(p.join().unwrap(), (i * i) as u64);
    }
    let after: HashSet<u32> = children().into_iter().collect();
    assert_eq!(after.len(), 2, "the dead worker was replaced");
    assert_ne!(after, before);
    drop(pool);
    assert_eq!(children(), Vec::<u32>::new());
    assert_eq!(
        fds.opened_since(),
        Vec::<String>::new(),
        "descriptors leaked"
    );
}

#[test]
fn recycled_workers_are_fresh_processes() {
    let _serial = serial();
    let pool = Pool::new(1).unwrap().recycle(3);
    let pids: Vec<u32> = (0..9)
        .map(|_| pool.start(whoami::call()).unwrap().join().unwrap())
        .collect();
    let distinct: HashSet<u32> = pids.iter().copied().collect();
    assert_eq!(distinct.len(), 3, "{pids:?}");
    assert!(pids.chunks(3).all(|c| c.iter().all(|p| *p == c[0])));
}

#[test]
fn map_and_queue_run_on_the_workers() {
    let _serial = serial();
    let pool = Pool::new(2).unwrap();
    assert_eq!(
        pool.map(square::call, 0..20).unwrap(),
        (0..20).map(|i| i * i).collect::<Vec<_>>()
    );
    let mut arrived: Vec<(usize, u64)> = pool
        .queue(nap::call, [200, 0, 0])
        .unwrap()
        .map(|(i, r)| (i, r.unwrap()))
        .collect();
    assert_ne!(arrived[0].0, 0, "the slow item came first");
    arrived.sort_unstable();
    assert_eq!(arrived, [(0, 200), (1, 0), (2, 0)]);
    assert_eq!(children().len(), 2);
}

#[test]
fn pending_results_time_out_and_can_be_joined_again() {
    let _serial = serial();
    let pool = Pool::new(1).unwrap();
    let mut slow = pool.start(nap::call(300)).unwrap();
    assert!(matches!(
        slow.join_timeout(Duration::from_millis(10)),
        Err(Error::Timeout)
    ));
    assert!(!slow.is_finished().unwrap());
    assert_eq!(slow.join_timeout(Duration::from_secs(30)).unwrap(), 300);
    // Abandoned: its result is dropped, and the pool goes on.
    drop(pool.start(nap::call(50)).unwrap());
    assert_eq!(pool.start(square::call(3)).unwrap().join().unwrap(), 9);
}

#[test]
fn threads_share_a_pool() {
    let _serial = serial();
    let pool = Pool::new(2).unwrap();
    let sums: Vec<u64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4_u64)
            .map(|t| {
                let pool = &pool;
                s.spawn(move || {
                    (0..10)
                        .map(|i| pool.start(square::call(t * 10 + i)).unwrap())
                        .collect::<Vec<_>>()
                        .into_iter()
                        .map(|p| p.join().unwrap())
                        .sum()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let total: u64 = sums.iter().sum();
    assert_eq!(total, (0..40_u64).map(|i| i * i).sum());
    drop(pool);
    assert_eq!(children(), Vec::<u32>::new());
}

#[test]
fn dropping_arrivals_abandons_the_rest_and_the_pool_goes_on() {
    let _serial = serial();
    let pool = Pool::new(2).unwrap();
    let mut arrivals = pool.queue(nap::call, [0, 100, 100, 100]).unwrap();
    let (first, value) = arrivals.next().unwrap();
    assert_eq!((first, value.unwrap()), (0, 0));
    drop(arrivals);
    assert_eq!(pool.map(square::call, [2, 3]).unwrap(), [4, 9]);
    pool.shutdown().unwrap();
    assert_eq!(children(), Vec::<u32>::new());
}

#[test]
fn a_panic_fails_its_call_and_the_worker_goes_on() {
    let _serial = serial();
    let pool = Pool::new(1).unwrap();
    let before = children();
    match pool.start(boom::call(13)).unwrap().join() {
        Err(Error::Panicked {
            message, location, ..
        }) => {
            assert_eq!(message, "unlucky 13");
            assert!(location.unwrap().contains("pool.rs"));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(pool.start(boom::call(14)).unwrap().join().unwrap(), 14);
    assert_eq!(children(), before, "the same worker carries on");
    let results: Vec<_> = pool
        .queue(boom::call, [12, 13, 14])
        .unwrap()
        .map(|(i, r)| (i, r.is_ok()))
        .collect();
    assert_eq!(results.len(), 3);
    assert!(results.contains(&(1, false)));
    assert!(matches!(
        pool.map(boom::call, [12, 13, 14]),
        Err(Error::Panicked { .. })
    ));
}

/// Whether std prints a backtrace where a child aborts, in this
/// environment.
fn backtraces_printed() -> bool {
    std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0")
}

#[test]
fn an_aborted_or_exhausted_worker_fails_only_its_call() {
    let _serial = serial();
    let pool = Pool::new(2).unwrap();
    let aborted = pool.start(abort::call()).unwrap();
    let exhausted = pool.start(exhaust::call(512)).unwrap();
    let fine: Vec<_> = (0..20)
        .map(|i| pool.start(square::call(i)).unwrap())
        .collect();
    let sigabrt = libc::SIGABRT;
    assert!(
        matches!(aborted.join(), Err(Error::Signaled { signal }) if signal == sigabrt),
        "an abort is SIGABRT"
    );
    // Its allocator failed under a limit of its own: out of memory, told
    // apart from the plain abort, unless std's backtrace print overwrote
    // the evidence (see `pproc::EXIT_OUT_OF_MEMORY`).
    match exhausted.join() {
        Err(Error::OutOfMemory) => {}
        Err(Error::Signaled { signal }) if signal == sigabrt && backtraces_printed() => {}
        other => panic!("unexpected {other:?}"),
    }
    for (i, p) in fine.into_iter().enumerate() {
        assert_eq!(p.join().unwrap(), (i * i) as u64);
    }
    assert_eq!(children().len(), 2, "both dead workers were replaced");
    pool.shutdown().unwrap();
    assert_eq!(children(), Vec::<u32>::new());
}

#[test]
fn no_worker_outlives_the_program() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pproc-probe"))
        .args(["pool", "3"])
        .stderr(std::process::Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let pids: Vec<u32> = String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .map(|pid| pid.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 3, "the probe saw its three workers");
    // The probe left without dropping its pool: its workers get SIGKILL
    // from the kernel as it dies, and are reaped by init.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let alive = || {
        pids.iter()
            .filter(|pid| pproc_workspace::process_state(**pid).is_some_and(|s| s != 'Z'))
            .count()
    };
    while alive() > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(alive(), 0, "a worker outlived its program");
}
