//! `Map`, `Queue` and `pmap` with real children: order, failures,
//! back-pressure, laziness, reuse, random access.
//!
//! Tests count this process's children: every test holds `serial()`, so that
//! no other test's children are counted with theirs.

use std::cell::Cell;
use std::collections::HashSet;
use std::rc::Rc;
use std::time::Duration;

use pproc::{BatchSize, Channel, Error, Map, Queue, parallel, pmap};
use pproc_workspace::{children, open_fds, serial};

#[parallel]
fn square(x: u64) -> u64 {
    x * x
}

/// Returns `x` after `ms` milliseconds.
#[parallel]
fn slow(x: u64, ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    x
}

#[parallel]
fn unlucky(x: u64, bad: u64) -> u64 {
    assert!(x != bad, "item {x} is unlucky");
    x
}

/// When it ran, in nanoseconds since the epoch.
#[parallel]
fn span(ms: u64) -> (u128, u128) {
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    };
    let start = now();
    std::thread::sleep(Duration::from_millis(ms));
    (start, now())
}

/// Sends `(i, j)` for `j` in `0..n`.
#[parallel]
fn row(ch: Channel<(u64, u64)>, i: u64, n: u64) {
    for j in 0..n {
        ch.send(&(i, j)).unwrap();
    }
}

/// The process that ran it.
#[parallel]
fn whoami(_x: u64) -> u32 {
    std::process::id()
}

/// The process that ran item `x`; item `bad` dies as `how` says: `"abort"`,
/// `"kill"` (SIGKILL of itself) or `"panic"`.
#[parallel]
fn fragile(x: u64, bad: u64, how: String) -> (u64, u32) {
    if x == bad {
        match how.as_str() {
            "abort" => std::process::abort(),
            "kill" => {
                nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL).unwrap();
            }
            _ => panic!("item {x} panics"),
        }
    }
    (x, std::process::id())
}

/// Returns at once for `wait == false`; else waits (at most 20 s) until
/// the file `marker` exists, and says whether it did.
#[parallel]
fn waits_for(marker: String, wait: bool) -> bool {
    if !wait {
        return true;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        if std::path::Path::new(&marker).exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

/// Sends `1`, then waits as `waits_for` does before it returns.
#[parallel]
fn sends_then_waits(ch: Channel<u64>, marker: String) {
    ch.send(&1).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline && !std::path::Path::new(&marker).exists() {
        std::thread::sleep(Duration::from_millis(5));
    }
    ch.send(&2).unwrap();
}

/// Sends `x` once, or nothing for 0.
#[parallel]
fn send_once(ch: Channel<u64>, x: u64) {
    if x > 0 {
        ch.send(&x).unwrap();
    }
}

#[test]
fn a_map_yields_in_input_order() {
    let _serial = serial();
    // Later items finish first.
    let out: Vec<u64> = Map::new(|i: u64| slow::call(i, (8 - i) * 15), 0..8)
        .limit(8)
        .collect::<pproc::Result<_>>()
        .unwrap();
    assert_eq!(out, (0..8).collect::<Vec<_>>());
    assert_eq!(children(), Vec::<u32>::new());
}

#[test]
fn a_queue_yields_in_completion_order() {
    let _serial = serial();
    let mut queue = Queue::new(|i: u64| slow::call(i, if i == 0 { 400 } else { 0 }), 0..4).limit(4);
    let (first, value) = queue.next_indexed().unwrap();
    assert_ne!(first, 0, "the slow item came first");
    assert_eq!(value.unwrap(), first as u64);
    let mut rest: Vec<u64> = queue.map(Result::unwrap).collect();
    rest.sort_unstable();
    assert_eq!(rest.len(), 3);
    assert!(rest.contains(&0));
}

#[test]
fn a_failure_ends_a_map_at_that_item_and_reaps_the_rest() {
    let _serial = serial();
    let fds = open_fds();
    let mut map = Map::new(|i| unlucky::call(i, 5), 0..50).limit(3);
    for i in 0..5 {
        assert_eq!(map.next().unwrap().unwrap(), i);
    }
    match map.next() {
        Some(Err(Error::Panicked { message, .. })) => assert_eq!(message, "item 5 is unlucky"),
        other => panic!("unexpected {other:?}"),
    }
    assert!(map.next().is_none());
    assert_eq!(children(), Vec::<u32>::new());
    drop(map);
    assert_eq!(
        fds.opened_since(),
        Vec::<String>::new(),
        "descriptors leaked"
    );
}

#[test]
fn a_queue_yields_a_failure_in_its_place_and_goes_on() {
    let _serial = serial();
    let mut values = Vec::new();
    let mut failures = Vec::new();
    let mut queue = Queue::new(|i| unlucky::call(i, 7), 0..20).limit(3);
    while let Some((index, outcome)) = queue.next_indexed() {
        match outcome {
            Ok(v) => values.push((index, v)),
            Err(e) => failures.push((index, e)),
        }
    }
    assert_eq!(values.len(), 19);
    assert!(values.iter().all(|&(i, v)| i as u64 == v));
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].0, 7);
    assert!(matches!(failures[0].1, Error::Panicked { .. }));
}

#[test]
fn pmap_returns_everything_or_the_first_failure() {
    let _serial = serial();
    assert_eq!(
        pmap(square::call, 0..20).unwrap(),
        (0..20).map(|i| i * i).collect::<Vec<_>>()
    );
    let err = pmap(|i| unlucky::call(i, 11), 0..30).unwrap_err();
    match err {
        Error::Panicked { message, .. } => assert_eq!(message, "item 11 is unlucky"),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(children(), Vec::<u32>::new());
}

#[test]
fn endless_inputs_are_pulled_lazily() {
    let _serial = serial();
    let pulled = Rc::new(Cell::new(0));
    let counter = Rc::clone(&pulled);
    let items = (0..).inspect(move |_| counter.set(counter.get() + 1));
    let map = Map::new(square::call, items).limit(2).window(4);
    assert_eq!(pulled.get(), 0, "nothing starts before it is asked for");
    let first: Vec<u64> = map.take(10).collect::<pproc::Result<_>>().unwrap();
    assert_eq!(first, (0..10).map(|i| i * i).collect::<Vec<_>>());
    // Ten yielded, at most the window ahead of them.
    assert!(pulled.get() <= 10 + 4, "pulled {}", pulled.get());
    assert_eq!(children(), Vec::<u32>::new());
}

#[test]
fn a_slow_first_item_holds_the_input_back() {
    let _serial = serial();
    let pulled = Rc::new(Cell::new(0));
    let counter = Rc::clone(&pulled);
    let items = (0..100).inspect(move |_| counter.set(counter.get() + 1));
    let mut map = Map::new(|i| slow::call(i, if i == 0 { 500 } else { 0 }), items)
        .limit(2)
        .window(4);
    assert_eq!(map.next().unwrap().unwrap(), 0);
    // While item 0 ran, the others finished and waited: no more than the
    // window was ever started ahead of the consumer.
    assert!(pulled.get() <= 4, "pulled {} items", pulled.get());
    assert!(map.held() <= 3, "held {}", map.held());
    let mut most = 0;
    let mut rest = Vec::new();
    while let Some(v) = map.next() {
        rest.push(v.unwrap());
        most = most.max(map.held());
        assert!(
            children().len() <= 2,
            "more children than the limit: {:?}",
            children()
        );
    }
    assert!(most <= 4, "held {most} results");
    assert_eq!(rest, (1..100).collect::<Vec<_>>());
    assert_eq!(pulled.get(), 100);
}

#[test]
fn without_a_limit_a_map_runs_one_child_per_core() {
    let _serial = serial();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let map = Map::new(|i| slow::call(i, 20), 0..(4 * cores as u64));
    let mut most = 0;
    for v in map {
        v.unwrap();
        most = most.max(children().len());
    }
    assert!(most <= cores, "{most} children on {cores} cores");
}

#[test]
fn get_waits_for_one_item_and_keeps_the_order() {
    let _serial = serial();
    let mut map = Map::new(square::call, 0..10).limit(2).window(2);
    assert_eq!(map.get(8).unwrap().ok(), Some(&64));
    assert_eq!(map.get(3).unwrap().ok(), Some(&9));
    assert_eq!(map.next().unwrap().unwrap(), 0);
    assert!(map.get(0).is_none(), "item 0 was yielded");
    assert!(map.get(10).is_none(), "there is no item 10");
    let rest: Vec<u64> = map.collect::<pproc::Result<_>>().unwrap();
    assert_eq!(rest, (1..10).map(|i| i * i).collect::<Vec<_>>());
}

#[test]
fn get_reports_a_failed_item() {
    let _serial = serial();
    let mut map = Map::new(|i| unlucky::call(i, 4), 0..10).limit(2);
    assert!(matches!(map.get(4), Some(Err(Error::Panicked { .. }))));
    assert_eq!(map.get(6).unwrap().ok(), Some(&6));
}

#[test]
fn reuse_runs_a_map_on_a_few_processes() {
    let _serial = serial();
    // Reused by default.
    let pids: HashSet<u32> = Map::new(whoami::call, 0..200)
        .limit(2)
        .collect::<pproc::Result<_>>()
        .unwrap();
    assert!(pids.len() <= 2, "{} processes", pids.len());
    let pids: HashSet<u32> = Map::new(whoami::call, 0..20)
        .limit(2)
        .reuse(false)
        .collect::<pproc::Result<_>>()
        .unwrap();
    assert_eq!(pids.len(), 20, "a process per item without reuse");
    assert_eq!(children(), Vec::<u32>::new());
}

#[test]
fn dropping_a_map_stops_its_children() {
    let _serial = serial();
    let mut map = Map::new(|i| slow::call(i, if i == 0 { 0 } else { 60_000 }), 0..10).limit(3);
    assert_eq!(map.next().unwrap().unwrap(), 0);
    assert!(!children().is_empty());
    drop(map);
    assert_eq!(children(), Vec::<u32>::new());
}

#[test]
fn channel_style_functions_map_what_they_send() {
    let _serial = serial();
    let out: Vec<u64> = Map::new(send_once::call, 1..6)
        .collect::<pproc::Result<_>>()
        .unwrap();
    assert_eq!(out, [1, 2, 3, 4, 5]);
    // A call that owed a value and returned without it fails.
    let mut queue = Queue::new(send_once::call, [3, 0]);
    let mut outcomes: Vec<_> = std::iter::from_fn(|| queue.next_indexed()).collect();
    outcomes.sort_by_key(|(i, _)| *i);
    assert_eq!(outcomes[0].1.as_ref().unwrap(), &3);
    assert!(matches!(outcomes[1].1, Err(Error::Disconnected)));
}

#[test]
fn reading_by_index_keeps_items_running_side_by_side() {
    let _serial = serial();
    // Items long enough that starting one never takes longer, even on a
    // loaded machine.
    let mut map = Map::new(|_| span::call(100), 0..20).limit(2).window(4);
    let mut spans = Vec::new();
    for i in 0..20 {
        spans.push(*map.get(i).unwrap().unwrap());
    }
    // Nothing was yielded, yet the window followed the reader: items ran
    // two at a time to the end, not one by one once the window filled.
    let overlapping = spans[8..].windows(2).filter(|w| w[1].0 < w[0].1).count();
    assert!(
        overlapping >= 5,
        "{overlapping} of 11 pairs overlapped: {spans:?}"
    );
}

#[test]
fn a_continuous_queue_yields_every_value_sent() {
    let _serial = serial();
    let mut queue = Queue::new(|i| row::call(i, i), 0..12)
        .limit(3)
        .continuous(true);
    let mut got = Vec::new();
    while let Some((index, value)) = queue.next_indexed() {
        let (i, j) = value.unwrap();
        assert_eq!(index as u64, i);
        got.push((i, j));
        assert!(children().len() <= 3, "the limit was exceeded");
    }
    got.sort_unstable();
    let want: Vec<_> = (0..12).flat_map(|i| (0..i).map(move |j| (i, j))).collect();
    assert_eq!(got, want, "item 0 sends nothing, item 11 eleven values");
    assert_eq!(children(), Vec::<u32>::new());
}

#[test]
fn progress_bars_do_not_change_results() {
    let _serial = serial();
    let out: Vec<u64> = Map::new(square::call, 0..30)
        .limit(3)
        .progress(true)
        .collect::<pproc::Result<_>>()
        .unwrap();
    assert_eq!(out, (0..30).map(|i| i * i).collect::<Vec<_>>());
    let total: u64 = Queue::new(square::call, (0..30).filter(|i| i % 2 == 0))
        .progress(true)
        .map(Result::unwrap)
        .sum();
    assert_eq!(total, (0..30).filter(|i| i % 2 == 0).map(|i| i * i).sum());
    let mut ex = pproc::Exchange::new(Vec::new()).limit(2).progress(true);
    for i in 0..10 {
        ex.start(square::call(i)).unwrap();
    }
    assert_eq!(ex.finish().unwrap().len(), 10);
}

#[test]
fn a_progress_bar_of_ones_own_counts_items() {
    use pproc::indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget};
    let _serial = serial();
    let bars = MultiProgress::with_draw_target(ProgressDrawTarget::hidden());
    let bar = bars.add(ProgressBar::new(0));
    let map = Map::new(square::call, 0..30)
        .limit(3)
        .progress_bar(bar.clone());
    assert_eq!(
        bar.length(),
        Some(30),
        "the input's length is known up front"
    );
    let out: Vec<u64> = map.collect::<pproc::Result<_>>().unwrap();
    assert_eq!(out.len(), 30);
    assert_eq!(bar.position(), 30);

    let bar = bars.add(ProgressBar::new(0));
    let pool = pproc::Pool::new(2).unwrap().progress_bar(bar.clone());
    let pending: Vec<_> = (0..7)
        .map(|i| pool.start(square::call(i)).unwrap())
        .collect();
    let got: Vec<u64> = pending.into_iter().map(|p| p.join().unwrap()).collect();
    assert_eq!(got, (0..7).map(|i| i * i).collect::<Vec<_>>());
    assert_eq!((bar.position(), bar.length()), (7, Some(7)));
    let pool = pool.progress(true);
    assert_eq!(pool.start(square::call(3)).unwrap().join().unwrap(), 9);
}

#[test]
fn maps_and_queues_run_forked_closures() {
    let _serial = serial();
    let fds = open_fds();
    let out: Vec<u64> = Map::new(
        // SAFETY: the closures take no lock another thread holds.
        |x: u64| unsafe { pproc::fork(move |ch: Channel<u64>| ch.send(&(x * 3)).unwrap()) },
        0..12,
    )
    .limit(3)
    .collect::<pproc::Result<_>>()
    .unwrap();
    assert_eq!(out, (0..12).map(|x| x * 3).collect::<Vec<_>>());

    let mut outcomes: Vec<(usize, bool)> = Vec::new();
    let mut queue = Queue::new(
        // SAFETY: as above.
        |x: u64| unsafe {
            pproc::fork(move |ch: Channel<u64>| {
                assert!(x != 4, "forked item {x} failed");
                ch.send(&x).unwrap();
            })
        },
        0..8,
    )
    .limit(2);
    while let Some((index, outcome)) = queue.next_indexed() {
        outcomes.push((index, outcome.is_ok()));
    }
    outcomes.sort_unstable();
    let want: Vec<_> = (0..8).map(|i| (i, i != 4)).collect();
    assert_eq!(outcomes, want);
    drop(queue);
    assert_eq!(children(), Vec::<u32>::new());
    assert_eq!(
        fds.opened_since(),
        Vec::<String>::new(),
        "descriptors leaked"
    );
}

#[test]
fn a_queue_waits_for_one_item_and_still_yields_it() {
    let _serial = serial();
    let mut queue = Queue::new(square::call, 0..).limit(2).window(2);
    assert_eq!(queue.get(12).unwrap().ok(), Some(&144));
    let mut seen: Vec<u64> = Vec::new();
    while let Some((index, value)) = queue.next_indexed() {
        seen.push(value.unwrap());
        if index == 12 {
            break;
        }
    }
    assert!(seen.contains(&144));
    drop(queue);
    assert_eq!(children(), Vec::<u32>::new());
}

/// Ten items a batch on one worker: item 5 kills the worker in the middle of
/// its first batch.
fn one_worker_batches_of_ten(how: &str) -> Vec<(usize, pproc::Result<(u64, u32)>)> {
    let how = how.to_owned();
    let mut queue = Queue::new(move |i| fragile::call(i, 5, how.clone()), 0..30)
        .limit(1)
        .batch(BatchSize::Fixed(10));
    let mut outcomes: Vec<_> = std::iter::from_fn(|| queue.next_indexed()).collect();
    outcomes.sort_by_key(|(i, _)| *i);
    outcomes
}

#[test]
fn a_worker_that_dies_mid_batch_fails_only_the_item_it_ran() {
    let _serial = serial();
    for (how, signal) in [("abort", 6), ("kill", 9)] {
        let outcomes = one_worker_batches_of_ten(how);
        assert_eq!(outcomes.len(), 30, "{how}: every item has an outcome");
        let pid = |i: usize| outcomes[i].1.as_ref().map(|&(_, pid)| pid).ok();
        for (i, (index, outcome)) in outcomes.iter().enumerate() {
            assert_eq!(*index, i);
            if i == 5 {
                assert!(
                    matches!(outcome, Err(Error::Signaled { signal: s }) if *s == signal),
                    "{how}: {outcome:?}"
                );
            } else {
                assert_eq!(outcome.as_ref().unwrap().0, i as u64, "{how}");
            }
        }
        // What the first worker finished came from it; the rest of its
        // batch ran on the worker that replaced it.
        assert!((1..5).all(|i| pid(i) == pid(0)), "{how}: {outcomes:?}");
        assert_ne!(pid(6), pid(0), "{how}: the rest ran elsewhere");
        assert!((7..30).all(|i| pid(i) == pid(6)), "{how}: {outcomes:?}");
        assert_eq!(children(), Vec::<u32>::new());
    }
}

#[test]
fn a_panic_in_a_batch_fails_its_item_and_the_worker_goes_on() {
    let _serial = serial();
    let outcomes = one_worker_batches_of_ten("panic");
    assert!(
        matches!(&outcomes[5].1, Err(Error::Panicked { message, .. }) if message == "item 5 panics")
    );
    let pids: HashSet<u32> = outcomes
        .iter()
        .filter_map(|(_, outcome)| Some(outcome.as_ref().ok()?.1))
        .collect();
    assert_eq!(pids.len(), 1, "one worker ran every item");
}

#[test]
fn tiny_items_are_batched_in_order_on_few_workers() {
    let _serial = serial();
    let fds = open_fds();
    let out: Vec<(u64, u32)> = Map::new(|i| fragile::call(i, u64::MAX, String::new()), 0..5000)
        .limit(2)
        .collect::<pproc::Result<_>>()
        .unwrap();
    assert!(out.iter().enumerate().all(|(i, &(x, _))| x == i as u64));
    let pids: HashSet<u32> = out.iter().map(|&(_, pid)| pid).collect();
    assert!(pids.len() <= 2, "{} workers", pids.len());
    assert_eq!(pmap(square::call, 0..3000).unwrap()[2999], 2999 * 2999);
    assert_eq!(children(), Vec::<u32>::new());
    assert_eq!(
        fds.opened_since(),
        Vec::<String>::new(),
        "descriptors leaked"
    );
}

/// A marker file no other test uses.
fn marker(name: &str) -> String {
    let path = std::env::temp_dir().join(format!("pproc-{name}-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path.display().to_string()
}

#[test]
fn an_answer_in_a_batch_does_not_wait_for_the_next_item() {
    let _serial = serial();
    let path = marker("batch-answer");
    let mut queue = Queue::new(|wait| waits_for::call(path.clone(), wait), [false, true])
        .limit(1)
        .batch(BatchSize::Fixed(2));
    // The first item's answer arrives while the second runs: the second
    // waits for the file made only then.
    let (index, first) = queue.next_indexed().unwrap();
    assert_eq!((index, first.unwrap()), (0, true));
    std::fs::write(&path, b"").unwrap();
    let (index, second) = queue.next_indexed().unwrap();
    assert_eq!(index, 1);
    assert!(
        second.unwrap(),
        "the second item never saw the first one's answer arrive"
    );
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn a_value_streamed_from_a_worker_does_not_wait_for_its_sender() {
    let _serial = serial();
    let path = marker("worker-stream");
    let mut queue = Queue::new(|_| sends_then_waits::call(path.clone()), [0])
        .limit(1)
        .continuous(true);
    assert_eq!(queue.next().unwrap().unwrap(), 1);
    std::fs::write(&path, b"").unwrap();
    assert_eq!(queue.next().unwrap().unwrap(), 2);
    assert!(queue.next().is_none());
    std::fs::remove_file(&path).unwrap();
}
