//! Closures that capture nothing, run in children without `#[parallel]`:
//! `pproc::spawn`, `pproc::call` and `pproc::closure`, through every way
//! of starting a call, and what a child does with an offset that is not
//! its code.

use std::time::Duration;

use pproc::{Builder, Call, Error, Exchange, Map, Pool, Queue};
use pproc_workspace::{children, serial, wait_gone};

fn double(x: u64) -> u64 {
    2 * x
}

#[test]
fn a_closure_runs_in_a_child_of_its_own() {
    let _serial = serial();
    let h = pproc::spawn((), |()| std::process::id()).unwrap();
    let pid = h.pid();
    let child = h.join().unwrap();
    assert_eq!(child, pid);
    assert_ne!(child, std::process::id());

    let h = pproc::spawn((3_u64, "ab".to_owned()), |(n, s): (u64, String)| {
        s.repeat(usize::try_from(n).unwrap())
    });
    assert_eq!(h.unwrap().join().unwrap(), "ababab");

    // A plain function is a closure that captures nothing, too.
    assert_eq!(pproc::spawn(21, double).unwrap().join().unwrap(), 42);
}

#[test]
fn a_closure_panics_as_a_function_does() {
    let _serial = serial();
    let h = pproc::spawn(0_u32, |d: u32| 10 / d).unwrap();
    match h.join() {
        Err(Error::Panicked { message, .. }) => {
            assert!(message.contains("divide by zero"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    let h = pproc::spawn::<_, (), _>(7_i32, |code| std::process::exit(code)).unwrap();
    assert!(matches!(h.join(), Err(Error::Exited { code: 7 })));
}

#[test]
fn closures_feed_maps_queues_pools_and_exchanges() {
    let _serial = serial();
    let squares: Vec<u64> = Map::new(pproc::closure(|x: u64| x * x), 0..200)
        .collect::<pproc::Result<_>>()
        .unwrap();
    assert_eq!(squares, (0..200_u64).map(|x| x * x).collect::<Vec<_>>());

    // One process per item, as pprocess does: each item's pid is its own.
    let pids: Vec<u32> = Map::new(pproc::closure(|_: u8| std::process::id()), 0..6_u8)
        .reuse(false)
        .collect::<pproc::Result<_>>()
        .unwrap();
    let mut distinct = pids.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), pids.len(), "{pids:?}");

    let mut queue = Queue::new(|x: u64| pproc::call(x, double), 0..50);
    let mut got: Vec<u64> = queue.by_ref().map(Result::unwrap).collect();
    got.sort_unstable();
    assert_eq!(got, (0..50).map(double).collect::<Vec<_>>());

    let pool = Pool::new(2).unwrap();
    let sums: Vec<u64> = pool
        .map(|x: u64| pproc::call((x, 1_u64), |(a, b)| a + b), 0..20)
        .unwrap();
    assert_eq!(sums, (1..=20).collect::<Vec<_>>());
    pool.shutdown().unwrap();

    let mut ex = Exchange::new(Vec::new()).limit(2);
    for word in ["one", "three", "seven"] {
        ex.start(pproc::call(word.to_owned(), |w: String| w.len()))
            .unwrap();
    }
    let mut lengths = ex.finish().unwrap();
    lengths.sort_unstable();
    assert_eq!(lengths, [3, 5, 5]);

    let builder = Builder::new().deadline(Duration::from_millis(300));
    let slow = builder.start(pproc::call((), |()| {
        std::thread::sleep(Duration::from_secs(30))
    }));
    assert!(matches!(slow.unwrap().join(), Err(Error::Timeout)));
    assert_eq!(children(), Vec::<u32>::new());
}

#[test]
fn a_dropped_closure_child_is_killed_and_reaped() {
    let _serial = serial();
    let h = pproc::spawn((), |()| std::thread::sleep(Duration::from_secs(600))).unwrap();
    let pid = h.pid();
    drop(h);
    wait_gone(pid);
    assert_eq!(children(), Vec::<u32>::new());
}

/// A call under the closures' name whose offset is not this program's
/// code, as a lying or broken parent would send: the child refuses it,
/// and calls nothing.
#[test]
fn an_offset_outside_the_code_is_refused() {
    let _serial = serial();
    // Far past the end of any executable, and zero (the ELF header, not
    // code in a position-independent executable).
    for offset in [u64::MAX / 2, 0] {
        let forged: Call<u64> = Call::new("pproc::closure", &(offset.to_le_bytes(), 5_u64));
        match forged.start().unwrap().join() {
            Err(Error::Unregistered { name }) => {
                assert!(name.contains("code offset"), "{name}");
            }
            other => panic!("offset {offset:#x}: {other:?}"),
        }
    }
    // Arguments too short to hold an offset.
    let short: Call<u64> = Call::new("pproc::closure", &7_u8);
    assert!(matches!(
        short.start().unwrap().join(),
        Err(Error::Unregistered { .. })
    ));
    assert_eq!(children(), Vec::<u32>::new());
}
