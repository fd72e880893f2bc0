//! pprocess's Exchange with real children: limits, queueing, failures.
//!
//! Some tests count this process's children: every test holds `serial()`, so
//! that no other test's children are counted with theirs.

use std::time::Duration;

use pproc::{Error, Exchange, Origin, Store, parallel};
use pproc_workspace::{Bounded, Tolerant, children, open_fds, serial};

#[parallel]
fn square(x: u64) -> u64 {
    x * x
}

#[parallel]
fn label(x: u64) -> String {
    format!("#{x}")
}

/// Works for a while; one call kills itself mid-stream.
#[parallel]
fn work(i: u64, victim: u64) -> u64 {
    if i == victim {
        // SAFETY: raise(3) with a valid signal.
        unsafe { libc::raise(libc::SIGKILL) };
    }
    i * 2
}

#[parallel]
fn boom_at(i: u64, at: u64) -> u64 {
    assert!(i != at, "call {i} failed");
    std::thread::sleep(Duration::from_millis(if i > at { 2000 } else { 0 }));
    i
}

#[parallel]
fn sleeps(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// Results of two functions, kept apart by their types.
#[derive(Default, Debug)]
struct Mixed {
    squares: Vec<u64>,
    labels: Vec<String>,
}

impl Store<u64> for Mixed {
    fn store(&mut self, value: u64, origin: &Origin<'_>) -> pproc::Result<()> {
        assert_eq!(origin.name(), square::NAME);
        self.squares.push(value);
        Ok(())
    }
}

impl Store<String> for Mixed {
    fn store(&mut self, value: String, origin: &Origin<'_>) -> pproc::Result<()> {
        assert_eq!(origin.name(), label::NAME);
        self.labels.push(value);
        Ok(())
    }
}

#[test]
fn the_spec_example_works() {
    let _serial = serial();
    let mut ex = Exchange::new(Vec::new()).limit(2);
    for i in 0..100 {
        ex.start(square::call(i)).unwrap();
    }
    assert!(ex.busy());
    assert!(ex.unfinished());
    let mut squares = ex.finish().unwrap();
    squares.sort_unstable();
    assert_eq!(squares, (0..100).map(|i| i * i).collect::<Vec<_>>());
}

#[test]
fn one_exchange_runs_functions_of_different_types() {
    let _serial = serial();
    let mut ex = Exchange::new(Mixed::default()).limit(3);
    for i in 0..10 {
        ex.start(square::call(i)).unwrap();
        ex.start(label::call(i)).unwrap();
    }
    let mut mixed = ex.finish().unwrap();
    mixed.squares.sort_unstable();
    mixed.labels.sort();
    assert_eq!(mixed.squares, (0..10).map(|i| i * i).collect::<Vec<_>>());
    let mut want: Vec<String> = (0..10).map(|i| format!("#{i}")).collect();
    want.sort();
    assert_eq!(mixed.labels, want);
}

#[test]
fn a_child_killed_mid_stream_fails_only_its_call() {
    let _serial = serial();
    let mut ex = Exchange::new(Tolerant::<u64>::default()).limit(4);
    for i in 0..200 {
        assert_eq!(
            ex.start(work::call(i, 77)).unwrap(),
            usize::try_from(i).unwrap()
        );
    }
    let done = ex.finish().unwrap();
    assert_eq!(done.values.len(), 199);
    assert!(done.values.iter().all(|&(index, v)| v == 2 * index as u64));
    assert!(!done.values.iter().any(|&(index, _)| index == 77));
    assert_eq!(done.failures.len(), 1);
    assert_eq!(done.failures[0].0, 77);
    assert!(
        matches!(done.failures[0].1, Error::Signaled { signal: 9 }),
        "{:?}",
        done.failures[0].1
    );
}

#[test]
fn the_first_failure_stops_the_exchange_and_reaps_everyone() {
    let _serial = serial();
    let fds = open_fds();
    let mut ex = Exchange::new(Vec::new()).limit(4);
    for i in 0..30 {
        ex.start(boom_at::call(i, 5)).unwrap();
    }
    match ex.finish() {
        Err(Error::Panicked { message, .. }) => assert_eq!(message, "call 5 failed"),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        children(),
        Vec::<u32>::new(),
        "children outlived the failure"
    );
    assert_eq!(
        fds.opened_since(),
        Vec::<String>::new(),
        "descriptors leaked"
    );
}

#[test]
fn the_limit_is_never_exceeded() {
    let _serial = serial();
    let mut ex = Exchange::new(Bounded::new(3)).limit(3);
    for i in 0..40 {
        ex.start(sleeps::call(i % 5)).unwrap();
        assert!(ex.active().len() <= 3);
    }
    let bounded = ex.finish().unwrap();
    assert_eq!(bounded.count, 40);
    assert!(bounded.most <= 3);
    assert_eq!(children(), Vec::<u32>::new());
}

#[test]
fn handles_can_be_added_and_polled() {
    let _serial = serial();
    let mut ex = Exchange::new(Vec::new()).limit(1);
    let slow = ex.add(sleeps::start(300).unwrap()).unwrap();
    assert_eq!(slow, 0);
    assert!(ex.busy());
    // Nothing ends within 10 ms: store gives up and stores nothing.
    assert_eq!(ex.store(Some(Duration::from_millis(10))).unwrap(), 0);
    assert_eq!(ex.active().len(), 1);
    assert_eq!(ex.active()[0].name(), sleeps::NAME);
    // add_wait waits for room under the limit, storing the first result.
    assert_eq!(ex.add_wait(sleeps::start(1).unwrap()).unwrap(), 1);
    assert_eq!(ex.get_ref(), &[300]);
    assert_eq!(ex.ready(Some(Duration::from_secs(30))).unwrap(), [1]);
    assert_eq!(ex.finish().unwrap(), [300, 1]);
}

#[test]
fn an_empty_exchange_finishes_at_once() {
    let _serial = serial();
    let mut ex: Exchange<Vec<u64>> = Exchange::new(Vec::new());
    assert!(!ex.unfinished());
    assert_eq!(ex.store(None).unwrap(), 0);
    assert_eq!(ex.ready(None).unwrap(), Vec::<usize>::new());
    assert_eq!(ex.finish().unwrap(), Vec::<u64>::new());
}

mod derived {
    use std::collections::{BTreeMap, HashSet};

    use pproc::{Error, Exchange, Failure, parallel};

    use super::{serial, square};

    #[parallel]
    fn pair(x: u64) -> (u64, String) {
        (x, x.to_string())
    }

    #[parallel]
    fn maybe(x: u64) -> u64 {
        assert!(x % 10 != 3, "{x} ends in 3");
        x
    }

    #[derive(Default, pproc::Exchange)]
    struct Squares {
        #[store]
        values: Vec<u64>,
    }

    #[derive(Default, Exchange)]
    struct Twice {
        #[store]
        all: Vec<u64>,
        #[store]
        distinct: HashSet<u64>,
        #[store(errors)]
        failures: Vec<Failure>,
    }

    fn keep_even(evens: &mut Vec<u64>, value: u64) {
        if value.is_multiple_of(2) {
            evens.push(value);
        }
    }

    #[derive(Default, Exchange)]
    struct Routed {
        #[store(from = super::square, with = keep_even)]
        evens: Vec<u64>,
        #[store(from = pair)]
        names: BTreeMap<u64, String>,
    }

    #[derive(Default, Exchange)]
    struct Generic<T: Ord> {
        #[store]
        sorted: std::collections::BTreeSet<T>,
    }

    #[test]
    fn the_spec_example_works() {
        let _serial = serial();
        let mut ex = Exchange::new(Squares::default()).limit(2);
        for i in 0..100 {
            ex.start(square::call(i)).unwrap();
        }
        let squares: Squares = ex.finish().unwrap();
        assert_eq!(squares.values.len(), 100);
        let mut values = squares.values;
        values.sort_unstable();
        assert_eq!(values[7], 49);
    }

    #[test]
    fn every_plain_field_gets_every_value_and_errors_are_collected() {
        let _serial = serial();
        let mut ex = Exchange::new(Twice::default()).limit(3);
        for i in 0..30 {
            ex.start(maybe::call(i % 15)).unwrap();
        }
        let twice = ex.finish().unwrap();
        // 3 and 13 fail, twice each: calls 3, 13, 18 and 28.
        assert_eq!(twice.all.len(), 26);
        assert_eq!(twice.distinct.len(), 13);
        let mut failed: Vec<usize> = twice.failures.iter().map(|f| f.index).collect();
        failed.sort_unstable();
        assert_eq!(failed, [3, 13, 18, 28]);
        for failure in &twice.failures {
            assert_eq!(failure.name, maybe::NAME);
            let want = format!("{} ends in 3", failure.index % 15);
            let got = match &failure.error {
                Error::Panicked { message, .. } => message.as_str(),
                other => panic!("unexpected {other:?}"),
            };
            assert_eq!(got, want);
        }
    }

    #[test]
    fn from_routes_by_function_and_with_calls_yours() {
        let _serial = serial();
        let mut ex = Exchange::new(Routed::default()).limit(2);
        for i in 0..8 {
            ex.start(square::call(i)).unwrap();
            ex.start(pair::call(i)).unwrap();
        }
        let routed = ex.finish().unwrap();
        let mut evens = routed.evens;
        evens.sort_unstable();
        assert_eq!(evens, [0, 4, 16, 36]);
        assert_eq!(routed.names.len(), 8);
        assert_eq!(routed.names[&5], "5");
    }

    #[test]
    fn generic_stores_work() {
        let _serial = serial();
        let mut ex = Exchange::new(Generic::default());
        for i in [5, 3, 5, 1] {
            ex.start(square::call(i)).unwrap();
        }
        let sorted: Vec<u64> = ex.finish().unwrap().sorted.into_iter().collect();
        assert_eq!(sorted, [1, 9, 25]);
    }
}

mod reused {
    use std::collections::HashSet;

    use pproc::{Error, Exchange, Origin, Store, parallel};
    use pproc_workspace::{children, open_fds, serial};

    /// The square, and which process computed it; `victim` kills its worker.
    #[parallel]
    fn square_on(x: u64, victim: u64) -> (u64, u32) {
        if x == victim {
            // SAFETY: raise(3) with a valid signal.
            unsafe { libc::raise(libc::SIGKILL) };
        }
        assert!(x != victim + 1, "{x} panics");
        (x * x, std::process::id())
    }

    #[derive(Default)]
    struct Seen {
        values: Vec<(usize, u64)>,
        pids: HashSet<u32>,
        failures: Vec<(usize, Error)>,
    }

    impl Store<(u64, u32)> for Seen {
        fn store(&mut self, (value, pid): (u64, u32), origin: &Origin<'_>) -> pproc::Result<()> {
            assert_eq!(origin.pid(), Some(pid), "the value came from its worker");
            self.values.push((origin.index(), value));
            self.pids.insert(pid);
            Ok(())
        }

        fn failed(&mut self, error: Error, origin: &Origin<'_>) -> pproc::Result<()> {
            self.failures.push((origin.index(), error));
            self.pids.extend(origin.pid());
            Ok(())
        }
    }

    #[test]
    fn reused_processes_run_every_call() {
        let _serial = serial();
        let mut ex = Exchange::new(Seen::default()).limit(2).reuse(true);
        for x in 0..200 {
            ex.start(square_on::call(x, u64::MAX - 1)).unwrap();
        }
        let seen = ex.finish().unwrap();
        assert_eq!(seen.values.len(), 200);
        assert!(seen.values.iter().all(|&(i, v)| v == (i * i) as u64));
        // Two processes served 200 calls.
        assert_eq!(seen.pids.len(), 2, "{:?}", seen.pids);
        assert!(seen.failures.is_empty());
        assert_eq!(children(), Vec::<u32>::new(), "workers outlived finish");
    }

    #[test]
    fn a_dead_worker_fails_only_its_call_and_is_replaced() {
        let _serial = serial();
        let fds = open_fds();
        let mut ex = Exchange::new(Seen::default()).limit(2).reuse(true);
        for x in 0..100 {
            ex.start(square_on::call(x, 40)).unwrap();
        }
        let seen = ex.finish().unwrap();
        // 40 was killed with its worker; 41 panicked, which its worker
        // survives.
        assert_eq!(seen.values.len(), 98);
        let mut failed: Vec<_> = seen.failures.iter().map(|(i, _)| *i).collect();
        failed.sort_unstable();
        assert_eq!(failed, [40, 41]);
        for (index, error) in &seen.failures {
            match (index, error) {
                (40, Error::Signaled { signal: 9 }) => {}
                (41, Error::Panicked { message, .. }) if message == "41 panics" => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        // Two workers, and a third after the death if the queue still
        // needed one (the survivor may have drained it first on a busy
        // machine): never more.
        assert!(
            (2..=3).contains(&seen.pids.len()),
            "at most one worker was replaced: {:?}",
            seen.pids
        );
        assert_eq!(children(), Vec::<u32>::new());
        assert_eq!(
            fds.opened_since(),
            Vec::<String>::new(),
            "descriptors leaked"
        );
    }

    #[test]
    fn unregistered_calls_fail_on_a_worker_too() {
        let _serial = serial();
        let mut ex = Exchange::new(Vec::<u64>::new()).limit(1).reuse(true);
        ex.start(pproc::Call::<u64>::new("exchange::nowhere", &()))
            .unwrap();
        match ex.finish() {
            Err(Error::Unregistered { name }) => assert_eq!(name, "exchange::nowhere"),
            other => panic!("unexpected {other:?}"),
        }
    }
}
