//! Limits per call: a wall-clock deadline, an address-space and a CPU-time
//! limit, each a clear error; captured output; panics with backtraces.
//!
//! Tests count this process's children: every test holds `serial()`.

use std::time::Duration;

use pproc::{Builder, Error, Exchange, Failure, Limit, parallel};
use pproc_workspace::{children, nest, open_fds, process_state, serial, wait_gone};

#[parallel]
fn nap(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// Allocates `mib` MiB, touching every page.
#[parallel]
fn hoard(mib: usize) -> usize {
    let mut blocks = Vec::new();
    for _ in 0..mib {
        blocks.push(vec![1_u8; 1 << 20]);
    }
    blocks.iter().map(Vec::len).sum::<usize>() >> 20
}

/// Burns CPU for ever.
#[parallel]
fn spin() -> u64 {
    let mut x = 0_u64;
    loop {
        x = std::hint::black_box(x.wrapping_add(1));
    }
}

#[parallel]
fn chatty(bytes: usize) -> usize {
    use std::io::Write;
    let line = [b'x'; 1023];
    let mut out = std::io::stdout().lock();
    let mut written = 0;
    while written < bytes {
        out.write_all(&line).unwrap();
        out.write_all(b"\n").unwrap();
        written += 1024;
    }
    eprint!("done");
    written
}

#[parallel]
fn boom(x: u32) -> u32 {
    assert!(x < 10, "{x} is too large");
    x
}

#[test]
fn a_deadline_kills_on_time_even_with_nobody_waiting() {
    let _serial = serial();
    let h = Builder::new()
        .deadline(Duration::from_millis(200))
        .start(nap::call(600_000))
        .unwrap();
    // Nobody calls into the handle: the watchdog kills the child anyway.
    wait_gone(h.pid());
    assert!(matches!(process_state(h.pid()), Some('Z'),));
    assert!(matches!(h.join(), Err(Error::Timeout)));
    assert_eq!(children(), Vec::<u32>::new());
}

#[test]
fn a_call_that_ends_in_time_keeps_its_result() {
    let _serial = serial();
    let fds = open_fds();
    let h = Builder::new()
        .deadline(Duration::from_secs(60))
        .start(nap::call(1))
        .unwrap();
    assert_eq!(h.join().unwrap(), 1);
    // The watchdog dropped its copy of the child's pidfd.
    assert_eq!(
        fds.opened_since(),
        Vec::<String>::new(),
        "descriptors leaked"
    );
}

#[test]
fn a_deadline_takes_the_tree_too() {
    let _serial = serial();
    let h = Builder::new()
        .deadline(Duration::from_millis(300))
        .start(nest::call(false))
        .unwrap();
    let grandchildren = h.recv().unwrap();
    assert!(matches!(h.join(), Err(Error::Timeout)));
    for pid in grandchildren {
        wait_gone(pid);
    }
}

#[test]
fn an_exchange_records_calls_past_their_deadline() {
    let _serial = serial();
    #[derive(Default, pproc::Exchange)]
    struct Naps {
        #[store]
        done: Vec<u64>,
        #[store(errors)]
        failures: Vec<Failure>,
    }
    let mut ex = Exchange::new(Naps::default())
        .limit(4)
        .builder(Builder::new().deadline(Duration::from_millis(500)));
    for ms in [0, 600_000, 1, 600_000] {
        ex.start(nap::call(ms)).unwrap();
    }
    let naps = ex.finish().unwrap();
    let mut done = naps.done;
    done.sort_unstable();
    assert_eq!(done, [0, 1]);
    let mut late: Vec<usize> = naps.failures.iter().map(|f| f.index).collect();
    late.sort_unstable();
    assert_eq!(late, [1, 3]);
    assert!(naps.failures.iter().all(|f| f.error.is_timeout()));
}

#[test]
fn memory_past_the_limit_is_a_clear_error() {
    let _serial = serial();
    let limit = 256 << 20;
    let limited = Builder::new().memory_limit(limit);
    assert_eq!(limited.start(hoard::call(16)).unwrap().join().unwrap(), 16);
    match limited.start(hoard::call(1024)).unwrap().join() {
        Err(Error::LimitExceeded(Limit::Memory { bytes })) => assert_eq!(bytes, limit),
        other => panic!("unexpected {other:?}"),
    }
    let err = limited
        .start(hoard::call(1024))
        .unwrap()
        .join()
        .unwrap_err();
    assert!(
        err.to_string().contains("address-space limit of 256 MiB"),
        "{err}"
    );
}

/// Asks for 64 TiB at once, which no allocator gives.
#[parallel]
fn allocate_huge() -> usize {
    let v: Vec<u8> = Vec::with_capacity(std::hint::black_box(1 << 46));
    std::hint::black_box(&v).capacity()
}

/// Aborts on purpose.
#[parallel]
fn abort_now() -> u8 {
    std::process::abort()
}

/// Aborts after an allocation that failed but was handled: `errno` is left
/// at `ENOMEM`, as an allocation failure leaves it.
#[parallel]
fn abort_after_a_handled_failure() -> u8 {
    // `black_box`: in release, an allocation nothing reads may be left out.
    let mut v: Vec<u8> = std::hint::black_box(Vec::new());
    assert!(v.try_reserve(std::hint::black_box(1 << 46)).is_err());
    std::hint::black_box(&v);
    std::process::abort()
}

#[test]
fn an_abort_under_a_memory_limit_is_an_abort() {
    let _serial = serial();
    let limited = Builder::new().memory_limit(256 << 20);
    match limited.start(abort_now::call()).unwrap().join() {
        Err(Error::Signaled { signal }) => assert_eq!(signal, libc::SIGABRT),
        other => panic!("unexpected {other:?}"),
    }
    // A failure that the child handled before it aborted still counts as
    // running out of memory: that is the evidence the runtime has.
    match limited
        .start(abort_after_a_handled_failure::call())
        .unwrap()
        .join()
    {
        Err(Error::LimitExceeded(Limit::Memory { bytes })) => assert_eq!(bytes, 256 << 20),
        other => panic!("unexpected {other:?}"),
    }
    // Without a limit from pproc, a failed allocation is still told apart,
    // unless std's backtrace print overwrote the evidence.
    let printed = std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0");
    match Builder::new().start(allocate_huge::call()).unwrap().join() {
        Err(Error::OutOfMemory) => assert!(!printed),
        Err(Error::Signaled { signal }) => assert!(printed && signal == libc::SIGABRT),
        other => panic!("unexpected {other:?}"),
    }
    // With a limit, it is told apart in every environment.
    match limited.start(allocate_huge::call()).unwrap().join() {
        Err(Error::LimitExceeded(Limit::Memory { bytes })) => assert_eq!(bytes, 256 << 20),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn cpu_time_past_the_limit_is_a_clear_error() {
    let _serial = serial();
    let h = Builder::new()
        .cpu_limit(Duration::from_millis(300))
        .start(spin::call())
        .unwrap();
    match h.join() {
        Err(Error::LimitExceeded(Limit::CpuTime { seconds })) => assert_eq!(seconds, 1),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn captured_output_comes_back_whole_without_blocking_the_child() {
    let _serial = serial();
    let fds = open_fds();
    // Four times a pipe's capacity: the child would block if nobody read.
    let out = Builder::new()
        .capture_output(true)
        .start(chatty::call(256 * 1024))
        .unwrap()
        .join_output();
    assert_eq!(out.result.unwrap(), 256 * 1024);
    assert_eq!(out.stdout.len(), 256 * 1024);
    assert!(
        out.stdout
            .split(|b| *b == b'\n')
            .all(|l| l.is_empty() || l.len() == 1023)
    );
    assert_eq!(out.stderr, b"done");
    assert_eq!(
        fds.opened_since(),
        Vec::<String>::new(),
        "descriptors leaked"
    );
    // Without capture, the streams are the parent's and nothing comes back.
    let plain = chatty::start(0).unwrap().join_output();
    assert!(plain.stdout.is_empty() && plain.stderr.is_empty());
}

#[test]
fn a_panic_carries_its_backtrace_when_asked() {
    let _serial = serial();
    let h = Builder::new()
        .backtrace(true)
        .start(boom::call(12))
        .unwrap();
    match h.join() {
        Err(Error::Panicked {
            message, backtrace, ..
        }) => {
            assert_eq!(message, "12 is too large");
            let backtrace = backtrace.expect("a backtrace was asked for");
            assert!(backtrace.contains("boom"), "{backtrace}");
        }
        other => panic!("unexpected {other:?}"),
    }
}
