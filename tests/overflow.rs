//! A child whose function overflows its stack says so, with the function's
//! name; any other fault stays the signal it is.

use pproc::{Builder, Channel, Error, Map, Pool, parallel};

/// Recurses `depth` times, a kilobyte of stack per frame; `u64::MAX`
/// overflows. The frame is used after the call, so the recursion cannot
/// become a loop.
fn recurse(depth: u64) -> u64 {
    let frame = std::hint::black_box([depth.to_le_bytes()[0]; 1024]);
    if depth == 0 {
        return 0;
    }
    let below = recurse(depth - 1);
    below + u64::from(std::hint::black_box(frame)[7])
}

#[parallel]
fn deep(depth: u64) -> u64 {
    recurse(depth)
}

#[parallel]
fn bad_pointer() -> u8 {
    // SAFETY: none: the fault is the point.
    unsafe { std::ptr::read_volatile(std::ptr::without_provenance::<u8>(8)) }
}

#[parallel]
fn raises_sigsegv() -> u8 {
    // SAFETY: raise(3) has no preconditions.
    unsafe { libc::raise(libc::SIGSEGV) };
    0
}

/// Overflows on a thread of its own, whose stack pproc does not watch.
#[parallel]
fn deep_on_a_thread() -> u64 {
    std::thread::spawn(|| recurse(u64::MAX))
        .join()
        .unwrap_or_default()
}

fn is_overflow_of(err: &Error, want: &str) -> bool {
    matches!(err, Error::StackOverflow { name } if name == want)
}

#[test]
fn an_overflow_is_reported_with_the_function_name() {
    let err = deep::start(u64::MAX).unwrap().join().unwrap_err();
    assert!(is_overflow_of(&err, deep::NAME), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("child `{}` overflowed its stack", deep::NAME)
    );
    // Each frame adds the low byte of its depth.
    assert_eq!(deep::start(100).unwrap().join().unwrap(), 5050);
}

#[test]
fn the_child_writes_the_overflow_to_its_stderr() {
    let out = Builder::new()
        .capture_output(true)
        .start(deep::call(u64::MAX))
        .unwrap()
        .join_output();
    let err = out.result.unwrap_err();
    assert!(is_overflow_of(&err, deep::NAME), "{err:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = format!(
        "thread 'main' of pproc child `{}` has overflowed its stack",
        deep::NAME
    );
    assert!(stderr.contains(&line), "{stderr}");
}

#[test]
fn a_bad_pointer_is_still_sigsegv() {
    let err = bad_pointer::start().unwrap().join().unwrap_err();
    assert!(matches!(err, Error::Signaled { signal: 11 }), "{err:?}");
}

#[test]
fn a_raised_sigsegv_is_still_sigsegv() {
    let err = raises_sigsegv::start().unwrap().join().unwrap_err();
    assert!(matches!(err, Error::Signaled { signal: 11 }), "{err:?}");
}

#[test]
fn an_overflow_on_another_thread_is_not_misreported() {
    let err = deep_on_a_thread::start().unwrap().join().unwrap_err();
    assert!(matches!(err, Error::Signaled { signal: 11 }), "{err:?}");
}

/// A map's item that overflows fails with its name, on a reused worker
/// (`reuse`) or a child of its own.
fn map_reports_the_overflow(reuse: bool) {
    let depths = [3, u64::MAX, 4];
    let out: Vec<_> = Map::new(deep::call, depths).reuse(reuse).limit(1).collect();
    assert_eq!(out.len(), 2, "the map ends at the failed item: {out:?}");
    assert_eq!(*out[0].as_ref().unwrap(), 1 + 2 + 3);
    let err = out[1].as_ref().unwrap_err();
    assert!(is_overflow_of(err, deep::NAME), "{err:?}");
}

#[test]
fn a_reused_worker_reports_the_overflow_for_that_item() {
    map_reports_the_overflow(true);
}

#[test]
fn a_map_without_reuse_reports_the_overflow_for_that_item() {
    map_reports_the_overflow(false);
}

#[test]
fn a_pool_reports_the_overflow_and_goes_on() {
    let pool = Pool::new(1).unwrap();
    let overflows = pool.start(deep::call(u64::MAX)).unwrap();
    let fine = pool.start(deep::call(5)).unwrap();
    let err = overflows.join().unwrap_err();
    assert!(is_overflow_of(&err, deep::NAME), "{err:?}");
    assert_eq!(fine.join().unwrap(), 1 + 2 + 3 + 4 + 5);
    pool.shutdown().unwrap();
}

#[test]
fn a_forked_child_reports_its_overflow() {
    let out: Vec<_> = Map::new(
        // SAFETY: the closure takes no lock another thread holds.
        |depth: u64| unsafe {
            pproc::fork(move |ch: Channel<u64>| ch.send(&recurse(depth)).unwrap())
        },
        [u64::MAX],
    )
    .collect();
    assert!(
        matches!(out[..], [Err(Error::StackOverflow { .. })]),
        "{out:?}"
    );
}
