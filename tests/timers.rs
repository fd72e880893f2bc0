//! Timers: `later`, `interval` and `rate`, each run a child process; checked
//! with the times the children saw (the monotonic clock, shared by the
//! processes of a machine), with lower bounds only.
//!
//! Tests count this process's children: every test holds `serial()`.

use std::time::Duration;

use pproc::{Error, parallel};
use pproc_workspace::{children, monotonic_ns, serial};

const MS: u64 = 1_000_000;

/// When it started and ended, on the monotonic clock, after working `ms`.
#[parallel]
fn work(ms: u64) -> (u64, u64) {
    let start = monotonic_ns();
    std::thread::sleep(Duration::from_millis(ms));
    (start, monotonic_ns())
}

#[parallel]
fn flaky(n: u32) -> u32 {
    assert!(n.is_multiple_of(2), "{n} is odd");
    n
}

#[test]
fn later_runs_once_after_its_delay() {
    let _serial = serial();
    let before = monotonic_ns();
    let timer = pproc::later(Duration::from_millis(100), work::call(0)).unwrap();
    let runs: Vec<(u64, u64)> = timer.iter().collect::<pproc::Result<_>>().unwrap();
    assert_eq!(runs.len(), 1);
    assert!(runs[0].0 >= before + 100 * MS, "started before its delay");
    assert_eq!(timer.started(), 1);
}

#[test]
fn a_timers_receives_tell_timed_out_from_over() {
    let _serial = serial();
    let timer = pproc::later(Duration::from_millis(300), flaky::call(3)).unwrap();
    assert!(matches!(
        timer.recv_timeout(Duration::from_millis(1)),
        Err(Error::Timeout)
    ));
    // The run's own failure is the inner error.
    match timer.recv_timeout(Duration::from_secs(60)) {
        Ok(Err(Error::Panicked { message, .. })) => assert_eq!(message, "3 is odd"),
        other => panic!("unexpected {other:?}"),
    }
    assert!(matches!(
        timer.recv_timeout(Duration::from_secs(60)),
        Err(Error::Disconnected)
    ));
    assert!(matches!(timer.recv(), Err(Error::Disconnected)));
}

#[test]
fn interval_runs_one_at_a_time_a_period_apart() {
    let _serial = serial();
    let timer = pproc::interval(Duration::from_millis(30), || work::call(20)).unwrap();
    let runs: Vec<(u64, u64)> = timer.iter().take(4).collect::<pproc::Result<_>>().unwrap();
    for pair in runs.windows(2) {
        let (_, end) = pair[0];
        let (start, _) = pair[1];
        assert!(
            start >= end + 30 * MS,
            "a run started before the period after the last"
        );
    }
    let _ = timer.stop();
    assert_eq!(children(), Vec::<u32>::new());
}

#[test]
fn rate_keeps_its_pace_when_runs_are_slower_than_the_period() {
    let _serial = serial();
    let origin = monotonic_ns();
    // Runs of 150 ms, 20 a second: they must overlap to keep the pace.
    let timer = pproc::rate(20.0, || work::call(150)).unwrap();
    let mut runs: Vec<(u64, u64)> = timer.iter().take(8).collect::<pproc::Result<_>>().unwrap();
    let started = timer.started();
    let skipped = timer.skipped();
    let _ = timer.stop();
    runs.sort_unstable();
    // Run k starts no sooner than its tick, k * 50 ms after the start
    // (ticks missed on a busy machine are skipped, so a later one can take
    // the k-th place, never an earlier one).
    for (k, (start, _)) in runs.iter().enumerate() {
        assert!(*start >= origin + k as u64 * 50 * MS, "run {k} came early");
    }
    let overlapped = runs.windows(2).any(|w| w[1].0 < w[0].1);
    assert!(overlapped, "runs never overlapped: the pace was not kept");
    assert!(started >= 8 && started + skipped >= 8);
    assert_eq!(
        children(),
        Vec::<u32>::new(),
        "stop reaps the runs in flight"
    );
}

#[test]
fn failed_runs_arrive_as_errors_and_the_timer_goes_on() {
    let _serial = serial();
    let mut n = 0;
    let timer = pproc::interval(Duration::from_millis(5), move || {
        n += 1;
        flaky::call(n)
    })
    .unwrap();
    let got: Vec<pproc::Result<u32>> = timer.iter().take(4).collect();
    let _ = timer.stop();
    assert!(matches!(&got[0], Err(Error::Panicked { message, .. }) if message == "1 is odd"));
    assert_eq!(*got[1].as_ref().unwrap(), 2);
    assert!(got[2].is_err());
    assert_eq!(*got[3].as_ref().unwrap(), 4);
}

#[test]
fn stopping_a_timer_kills_its_runs() {
    let _serial = serial();
    let timer = pproc::rate(100.0, || work::call(600_000)).unwrap();
    while children().len() < 3 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let leftovers = timer.stop();
    assert!(leftovers.is_empty(), "no run finished");
    assert_eq!(children(), Vec::<u32>::new());
    let rate = pproc::rate(0.0, || work::call(0));
    assert!(matches!(rate, Err(Error::Io(_))));
}
