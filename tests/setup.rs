//! What a child runs before its first call: the program's `pproc::setup!`
//! functions, in the order of their paths, and the initializer of the
//! builder, pool, map, queue or exchange that started it. One that fails
//! fails that process's calls with `Error::Setup`, and nothing respawns.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use pproc::{Builder, Call, Error, Exchange, Map, Pool, Queue, parallel};
use pproc_workspace::{children, serial};

/// What the setups and initializers of this process did, in order.
static LOG: Mutex<Vec<String>> = Mutex::new(Vec::new());
static SCALE: AtomicU64 = AtomicU64::new(1);

fn note(what: &str) {
    LOG.lock().unwrap().push(what.to_owned());
}

fn b_second() {
    note("b_second");
}

fn a_first() {
    note("a_first");
}

pproc::setup!(b_second, a_first);

#[parallel]
fn log() -> Vec<String> {
    LOG.lock().unwrap().clone()
}

#[parallel]
fn scaled(x: u64) -> u64 {
    x * SCALE.load(Ordering::Relaxed)
}

#[parallel]
fn set_scale(scale: u64) {
    note("set_scale");
    SCALE.store(scale, Ordering::Relaxed);
}

#[parallel]
fn refuse(why: String) {
    panic!("{why}");
}

fn is_setup_error(err: &Error, name: &str, message: &str) -> bool {
    matches!(err, Error::Setup { name: n, message: m } if n.ends_with(name) && m.contains(message))
}

#[test]
fn every_child_runs_the_programs_setup_in_order_of_its_paths() {
    let _serial = serial();
    let expected = ["a_first", "b_second"].map(String::from);
    assert_eq!(log::start().unwrap().join().unwrap(), expected);
    // A reused worker ran them once, before its first call.
    let pool = Pool::new(1).unwrap();
    for _ in 0..3 {
        assert_eq!(pool.start(log::call()).unwrap().join().unwrap(), expected);
    }
    pool.shutdown().unwrap();
    // The parent did not run them: it runs `main`, or here the tests.
    assert!(LOG.lock().unwrap().is_empty());
}

#[test]
fn an_initializer_runs_once_per_process_after_the_setup() {
    let _serial = serial();
    let builder = Builder::new().initializer(set_scale::call(3));
    assert_eq!(builder.start(scaled::call(5)).unwrap().join().unwrap(), 15);
    assert_eq!(
        builder.start(log::call()).unwrap().join().unwrap(),
        ["a_first", "b_second", "set_scale"].map(String::from)
    );

    let pool = Pool::with_initializer(2, set_scale::call(10)).unwrap();
    assert_eq!(pool.map(scaled::call, 1..=4).unwrap(), [10, 20, 30, 40]);
    for _ in 0..4 {
        let log = pool.start(log::call()).unwrap().join().unwrap();
        assert_eq!(
            log.iter().filter(|l| *l == "set_scale").count(),
            1,
            "{log:?}"
        );
    }
    pool.shutdown().unwrap();

    // A closure that captures nothing is an initializer too.
    let init = pproc::call(7_u64, |s: u64| SCALE.store(s, Ordering::Relaxed));
    let got: Vec<u64> = Map::new(scaled::call, 0..100)
        .initializer(init.clone())
        .collect::<pproc::Result<_>>()
        .unwrap();
    assert_eq!(got, (0..100).map(|x| 7 * x).collect::<Vec<_>>());
    let mut got: Vec<u64> = Queue::new(scaled::call, 0..10)
        .reuse(false)
        .initializer(init.clone())
        .map(Result::unwrap)
        .collect();
    got.sort_unstable();
    assert_eq!(got, (0..10).map(|x| 7 * x).collect::<Vec<_>>());

    // Given before the builder, the exchange's initializer stays.
    let mut ex = Exchange::new(Vec::new())
        .initializer(init)
        .builder(Builder::new())
        .reuse(true)
        .limit(2);
    for x in 1..=3 {
        ex.start(scaled::call(x)).unwrap();
    }
    let mut got = ex.finish().unwrap();
    got.sort_unstable();
    assert_eq!(got, [7, 14, 21]);
    assert_eq!(children(), Vec::<u32>::new());
}

#[test]
fn a_failing_initializer_fails_the_calls_and_respawns_nothing() {
    let _serial = serial();
    let builder = Builder::new().initializer(refuse::call("no config here".into()));
    let err = builder.start(scaled::call(1)).unwrap().join().unwrap_err();
    assert!(is_setup_error(&err, "refuse", "no config here"), "{err:?}");
    assert!(err.to_string().contains("setup"), "{err}");

    // A pool's workers stay, answering every call with the error: the
    // same two processes before and after, none started in their place.
    let pool = Pool::with_initializer(2, refuse::call("bad pool".into())).unwrap();
    let mut before = children();
    before.sort_unstable();
    assert_eq!(before.len(), 2);
    for x in 0..40 {
        let err = pool.start(scaled::call(x)).unwrap().join().unwrap_err();
        assert!(is_setup_error(&err, "refuse", "bad pool"), "{err:?}");
    }
    let mut after = children();
    after.sort_unstable();
    assert_eq!(after, before, "no worker was replaced");
    pool.shutdown().unwrap();

    // A map ends at its first failed item, as always; a queue goes on,
    // and every item fails so, on the same two workers throughout.
    let mut map = Map::new(scaled::call, 0..300)
        .limit(2)
        .initializer(pproc::call((), |()| panic!("closure says no")));
    let err = map.next().unwrap().unwrap_err();
    assert!(
        is_setup_error(&err, "initializer closure", "closure says no"),
        "{err:?}"
    );
    assert!(map.next().is_none());
    drop(map);
    let queue = Queue::new(scaled::call, 0..300)
        .limit(2)
        .initializer(pproc::call((), |()| panic!("closure says no")));
    let mut seen = std::collections::BTreeSet::new();
    let mut failed = 0;
    for result in queue {
        seen.extend(children());
        let err = result.unwrap_err();
        assert!(
            is_setup_error(&err, "initializer closure", "closure says no"),
            "{err:?}"
        );
        failed += 1;
    }
    assert_eq!(failed, 300);
    assert!(
        seen.len() <= 2,
        "workers were started in place of others: {seen:?}"
    );

    // An initializer that is not registered says so.
    let missing: Call<()> = Call::new("not::registered", &());
    let err = Builder::new()
        .initializer(missing)
        .start(scaled::call(1))
        .unwrap()
        .join()
        .unwrap_err();
    assert!(
        is_setup_error(&err, "not::registered", "registered"),
        "{err:?}"
    );
    assert_eq!(children(), Vec::<u32>::new());
}
