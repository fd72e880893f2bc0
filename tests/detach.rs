//! Detached children run on without their handle and are reaped by pproc
//! when they exit: no zombie, no descriptor left.
//!
//! Tests count this process's children: every test holds `serial()`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use pproc::{Channel, parallel};
use pproc_workspace::{open_fds, process_state, serial};

/// Sleeps `ms`, then writes `marker`.
#[parallel]
fn late_write(marker: String, ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
    std::fs::write(marker, b"done").unwrap();
}

/// Sends until its parent is gone, then says so in `marker`.
#[parallel]
fn send_until_gone(ch: Channel<u64>, marker: String) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut i = 0;
    while Instant::now() < deadline {
        if let Err(err) = ch.send(&i).and_then(|()| ch.flush()) {
            std::fs::write(marker, err.to_string()).unwrap();
            return;
        }
        i += 1;
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn marker(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("pproc-detach-{}-{name}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

/// Waits (at most 20 s) until `check` holds.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within 20 s");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Whether `pid` is gone: not even a zombie.
fn reaped(pid: u32) -> bool {
    process_state(pid).is_none()
}

#[test]
fn a_detached_child_runs_to_its_end_and_is_reaped() {
    let _serial = serial();
    // The reaper's thread and its eventfd live as long as the process:
    // made here, before the count.
    let first = late_write::start(marker("first").display().to_string(), 0).unwrap();
    let pid = first.pid();
    first.detach().unwrap();
    eventually("the first detached child is reaped", || reaped(pid));

    let fds = open_fds();
    let path = marker("late");
    let h = late_write::start(path.display().to_string(), 300).unwrap();
    let pid = h.pid();
    h.detach().unwrap();
    assert!(
        matches!(process_state(pid), Some('R' | 'S' | 'D')),
        "the child runs on without its handle"
    );
    eventually("the detached child finishes its work", || path.exists());
    eventually("the detached child is reaped", || reaped(pid));
    assert_eq!(std::fs::read(&path).unwrap(), b"done");
    assert_eq!(
        fds.opened_since(),
        Vec::<String>::new(),
        "descriptors leaked"
    );
    let _ = std::fs::remove_file(path);
}

#[test]
fn a_detached_childs_sends_fail_and_it_ends() {
    let _serial = serial();
    let path = marker("sends");
    let h = send_until_gone::start(path.display().to_string()).unwrap();
    assert_eq!(h.recv().unwrap(), 0);
    let pid = h.pid();
    h.detach().unwrap();
    eventually("the child sees its parent's end close", || path.exists());
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        pproc::Error::Disconnected.to_string()
    );
    eventually("the detached child is reaped", || reaped(pid));
    let _ = std::fs::remove_file(path);
}

#[test]
fn many_detached_children_are_all_reaped() {
    let _serial = serial();
    let paths: Vec<PathBuf> = (0..24).map(|i| marker(&format!("many-{i}"))).collect();
    let pids: Vec<u32> = paths
        .iter()
        .enumerate()
        .map(|(i, path)| {
            let h = late_write::start(path.display().to_string(), (i as u64 % 4) * 20).unwrap();
            let pid = h.pid();
            h.detach().unwrap();
            pid
        })
        .collect();
    eventually("every detached child is reaped", || {
        pids.iter().all(|pid| reaped(*pid))
    });
    assert!(paths.iter().all(|p| p.exists()), "every child did its work");
    for path in paths {
        let _ = std::fs::remove_file(path);
    }
}
