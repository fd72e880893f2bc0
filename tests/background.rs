//! Background children: started by one program, collected by another,
//! after the first has exited; the address goes when the results are out.
//!
//! A test counts this process's children, and every test starts some (the
//! probe, at least): every test holds `serial()`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use pproc::{Background, Call, Error, Returns, parallel};
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

#[test]
fn a_collector_that_leaves_early_leaves_everything_to_the_next() {
    let _serial = serial();
    let path = address("early");
    let out = probe(&["background", path.to_str().unwrap(), "count", "4", "20"]);
    assert!(out.status.success(), "{out:?}");
    let mut first = Background::<u64>::connect(&path).unwrap();
    assert_eq!(first.next().unwrap().unwrap(), 0);
    drop(first);
    let values: Vec<u64> = Background::connect(&path)
        .unwrap()
        .collect::<pproc::Result<_>>()
        .unwrap();
    assert_eq!(values, [0, 1, 2, 3]);
    assert!(gone(&path));
    // Nobody listens any more.
    assert!(matches!(
        Background::<u64>::connect(&path),
        Err(Error::Io(_))
    ));
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
