//! Background children: started by one program, collected by another,
//! after the first has exited; the address goes when the results are out.
//!
//! A test counts this process's children, and every test starts some (the
//! probe, at least): every test holds `serial()`.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use pproc::{Background, Call, Channel, Error, Returns, parallel};
use pproc_workspace::{children, serial};

fn address(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("pproc-test-{}-{name}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

/// Waits (up to a generous bound) for the background child to remove its
/// address after handing its results out.
fn gone(path: &Path) -> bool {
    let start = Instant::now();
    while path.exists() {
        if start.elapsed() > Duration::from_secs(30) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

fn probe(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pproc-probe"))
        .args(args)
        .output()
        .expect("the probe runs")
}

#[parallel]
fn fails(x: u64) -> u64 {
    assert!(x > 100, "{x} is too small");
    x
}

#[test]
fn another_program_collects_what_a_finished_one_started() {
    let _serial = serial();
    let path = address("count");
    let out = probe(&["background", path.to_str().unwrap(), "count", "5", "60"]);
    assert!(out.status.success(), "{out:?}");
    // The probe has exited; its call runs on, detached: not our child.
    assert!(path.exists());
    assert!(children().is_empty());
    let values: Vec<u64> = Background::connect(&path)
        .unwrap()
        .collect::<pproc::Result<_>>()
        .unwrap();
    assert_eq!(values, [0, 1, 2, 3, 4]);
    assert!(gone(&path), "the address was not removed");
}

#[test]
fn a_returned_value_is_collected_too() {
    let _serial = serial();
    let path = address("double");
    let out = probe(&["background", path.to_str().unwrap(), "double", "21"]);
    assert!(out.status.success(), "{out:?}");
    let values: Vec<u64> = Background::connect(&path)
        .unwrap()
        .collect::<pproc::Result<_>>()
        .unwrap();
    assert_eq!(values, [42]);
    assert!(gone(&path));
}

/// Whether nothing listens at `path` any more: the file is gone.
fn refused(path: &Path) -> bool {
    matches!(
        Background::<u64>::connect(path),
        Err(Error::Io(err)) if err.kind() == ErrorKind::NotFound
    )
}

/// Starts `count_slowly` (the probe's) in the background: `n` values,
/// `ms` apart.
fn count(path: &Path, n: u64, ms: u64) {
    let out = probe(&[
        "background",
        path.to_str().unwrap(),
        "count",
        &n.to_string(),
        &ms.to_string(),
    ]);
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn a_collector_that_leaves_early_leaves_the_rest_to_the_next() {
    let _serial = serial();
    let path = address("early");
    count(&path, 5, 0);
    let mut first = Background::<u64>::connect(&path).unwrap();
    assert_eq!(first.next().unwrap().unwrap(), 0);
    assert_eq!(first.next().unwrap().unwrap(), 1);
    drop(first);
    let mut second = Background::<u64>::connect(&path).unwrap();
    for expected in 2..5 {
        assert_eq!(second.next().unwrap().unwrap(), expected);
    }
    assert!(second.next().is_none());
    assert!(second.next().is_none());
    assert!(gone(&path), "the address was not removed");
    assert!(refused(&path));
}

#[test]
fn a_collector_that_reads_nothing_leaves_everything_to_the_next() {
    let _serial = serial();
    let path = address("nothing");
    count(&path, 5, 0);
    drop(Background::<u64>::connect(&path).unwrap());
    // And one that stops before the end, after the last value.
    let mut second = Background::<u64>::connect(&path).unwrap();
    drop(second.by_ref().take(5).collect::<pproc::Result<Vec<_>>>());
    drop(second);
    // Its values are gone, not the end.
    let mut third = Background::<u64>::connect(&path).unwrap();
    assert!(third.next().is_none());
    assert!(gone(&path), "the address was not removed");
    assert!(refused(&path));
}

#[test]
fn a_collector_that_reads_everything_removes_the_address() {
    let _serial = serial();
    let path = address("everything");
    count(&path, 5, 0);
    drop(Background::<u64>::connect(&path).unwrap());
    let values: Vec<u64> = Background::connect(&path)
        .unwrap()
        .collect::<pproc::Result<_>>()
        .unwrap();
    assert_eq!(values, [0, 1, 2, 3, 4]);
    assert!(gone(&path), "the address was not removed");
    assert!(refused(&path));
}

/// Sends `0..before`, then waits (up to a generous bound) for the file
/// `gate` to exist, then sends `before..before + after`.
#[parallel]
fn gated(ch: Channel<u64>, gate: String, before: u64, after: u64) {
    for i in 0..before {
        ch.send(&i).expect("the background child keeps every value");
    }
    let start = Instant::now();
    while !Path::new(&gate).exists() {
        if start.elapsed() > Duration::from_secs(120) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    for i in before..before + after {
        ch.send(&i).expect("the background child keeps every value");
    }
}

fn gate(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("pproc-test-{}-{name}.gate", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

/// Connects by hand, sends `bytes` and reads until the child closes the
/// connection: it drops a collector that sends what it should not. Returns
/// the connection, still open on this side.
fn misbehave(path: &Path, bytes: &[u8]) -> UnixStream {
    let mut stream = UnixStream::connect(path).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stream.write_all(bytes).unwrap();
    let mut sink = Vec::new();
    // An error here is a timeout: the child did not drop it.
    stream.read_to_end(&mut sink).unwrap();
    stream
}

#[test]
fn a_collector_that_leaves_while_the_call_runs_leaves_the_rest() {
    let _serial = serial();
    let path = address("running");
    let gate = gate("running");
    pproc::start_background(&path, gated::call(gate.to_str().unwrap().into(), 1, 2)).unwrap();
    let mut first = Background::<u64>::connect(&path).unwrap();
    assert_eq!(first.next().unwrap().unwrap(), 0);
    drop(first);
    // The child waits for the call's next value, and still notices that
    // the first collector left: it serves (and drops) the next ones.
    // An unknown tag.
    let garbage = misbehave(&path, &[1, 0, 0, 0, 200]);
    // An acknowledgement (tag 8) of a value it was not sent.
    let liar = misbehave(&path, &[1, 0, 0, 0, 8]);
    std::fs::write(&gate, b"").unwrap();
    let values: Vec<u64> = Background::connect(&path)
        .unwrap()
        .collect::<pproc::Result<_>>()
        .unwrap();
    assert_eq!(values, [1, 2]);
    assert!(gone(&path), "the address was not removed");
    assert!(refused(&path));
    drop((garbage, liar));
    std::fs::remove_file(&gate).unwrap();
}

#[test]
fn garbage_from_a_collector_leaves_everything_to_the_next() {
    let _serial = serial();
    let path = address("garbage");
    let gate = gate("garbage");
    pproc::start_background(&path, gated::call(gate.to_str().unwrap().into(), 2, 1)).unwrap();
    let bad: [&[u8]; 5] = [
        // An unknown tag.
        &[1, 0, 0, 0, 200],
        // A frame without a tag.
        &[0, 0, 0, 0],
        // A length over any limit.
        &[255, 255, 255, 255],
        // An acknowledgement (tag 8) with a body.
        &[2, 0, 0, 0, 8, 0],
        // Plain text.
        b"hello, background child",
    ];
    // Each is dropped while it is still connected.
    let held: Vec<UnixStream> = bad.iter().map(|bytes| misbehave(&path, bytes)).collect();
    // One that closes in the middle of a frame.
    let mut torn = UnixStream::connect(&path).unwrap();
    torn.write_all(&[1, 0, 0]).unwrap();
    drop(torn);
    std::fs::write(&gate, b"").unwrap();
    let values: Vec<u64> = Background::connect(&path)
        .unwrap()
        .collect::<pproc::Result<_>>()
        .unwrap();
    assert_eq!(values, [0, 1, 2]);
    assert!(gone(&path), "the address was not removed");
    drop(held);
    std::fs::remove_file(&gate).unwrap();
}

#[test]
fn a_panic_reaches_the_collector() {
    let _serial = serial();
    let path = address("panic");
    pproc::start_background(&path, fails::call(7)).unwrap();
    let mut results = Background::<u64>::connect(&path).unwrap();
    match results.next() {
        Some(Err(Error::Panicked { message, .. })) => assert_eq!(message, "7 is too small"),
        other => panic!("unexpected {other:?}"),
    }
    assert!(results.next().is_none());
    assert!(gone(&path));
}

#[test]
fn bad_starts_are_errors_and_leave_no_address() {
    let _serial = serial();
    let path = address("bad");
    let err = pproc::start_background(&path, Call::<u64, (), (), Returns>::new("no::such", &()))
        .unwrap_err();
    assert!(matches!(err, Error::Unregistered { .. }), "{err}");
    assert!(!path.exists());
    // An address in use is refused.
    std::fs::write(&path, b"taken").unwrap();
    let err = pproc::start_background(&path, fails::call(500)).unwrap_err();
    assert!(matches!(err, Error::Io(_)), "{err}");
    std::fs::remove_file(&path).unwrap();
    // A directory that does not exist.
    let nowhere = std::env::temp_dir().join("pproc-no-such-dir/x.sock");
    assert!(matches!(
        pproc::start_background(&nowhere, fails::call(500)),
        Err(Error::Io(_))
    ));
}

#[test]
fn gather_takes_from_many_addresses_as_they_arrive() {
    let _serial = serial();
    let paths: Vec<PathBuf> = (0..3).map(|i| address(&format!("gather-{i}"))).collect();
    // The slowest first: arrival order is not address order.
    for (path, ms) in paths.iter().zip(["1000", "0", "0"]) {
        let out = probe(&["background", path.to_str().unwrap(), "count", "2", ms]);
        assert!(out.status.success(), "{out:?}");
    }
    let got: Vec<(usize, u64)> = Background::gather(&paths)
        .unwrap()
        .map(|(i, v)| (i, v.unwrap()))
        .collect();
    assert_eq!(got.len(), 6);
    assert_ne!(got[0].0, 0, "the slow address came first: {got:?}");
    for i in 0..3 {
        let mine: Vec<u64> = got
            .iter()
            .filter(|(a, _)| *a == i)
            .map(|(_, v)| *v)
            .collect();
        assert_eq!(mine, [0, 1]);
    }
    assert!(paths.iter().all(|p| gone(p)));
}
