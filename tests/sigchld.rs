//! A program that ignores `SIGCHLD` (as many servers do) has its children
//! reaped by the kernel as they exit: results that arrived are still
//! delivered, and an exit nobody could read is reported as
//! `Disconnected`, never as an `ECHILD` error.
//!
//! The disposition is process-wide, so this file is a test binary of its
//! own, and every test sets it first.

use std::time::Duration;

use pproc::{Background, Error, Pool, parallel};
use pproc_workspace::{children, open_fds, serial};

#[parallel]
fn square(x: u64) -> u64 {
    x * x
}

#[parallel]
fn fail(message: String) -> u64 {
    panic!("{message}")
}

#[parallel]
fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

fn ignore_sigchld() {
    // SAFETY: SIG_IGN installs no handler code.
    unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGCHLD,
            nix::sys::signal::SigHandler::SigIgn,
        )
        .expect("SIGCHLD can be ignored");
    }
}

#[test]
fn a_delivered_result_is_returned() {
    let _serial = serial();
    ignore_sigchld();
    let fds = open_fds();
    for x in 0..10 {
        let h = square::start(x).unwrap();
        assert_eq!(h.join().unwrap(), x * x);
    }
    let h = fail::start("on purpose".into()).unwrap();
    match h.join() {
        Err(Error::Panicked { message, .. }) => assert_eq!(message, "on purpose"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        fds.opened_since(),
        Vec::<String>::new(),
        "descriptors leaked"
    );
}

#[test]
fn an_exit_nobody_can_read_is_disconnected() {
    let _serial = serial();
    ignore_sigchld();
    let mut h = sleep_ms::start(60_000).unwrap();
    h.kill().unwrap();
    assert!(matches!(
        h.join_timeout(Duration::from_secs(60)),
        Err(Error::Disconnected)
    ));
    // Killing a child that is gone (and may have been reaped by the
    // kernel) is not an error.
    let h = square::start(3).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    h.kill().unwrap();
    assert!(matches!(h.join(), Ok(9) | Err(Error::Disconnected)));
}

#[test]
fn pools_and_maps_work() {
    let _serial = serial();
    ignore_sigchld();
    let pool = Pool::new(2).unwrap();
    assert_eq!(
        pool.map(square::call, 0..20).unwrap(),
        (0..20).map(|x| x * x).collect::<Vec<_>>()
    );
    drop(pool);
    assert_eq!(pproc::pmap(square::call, [1, 2, 3]).unwrap(), [1, 4, 9]);
    // The kernel reaps at once: nothing is left, zombie or not.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !children().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(children(), Vec::<u32>::new());
}

#[test]
fn background_calls_start_and_deliver() {
    let _serial = serial();
    ignore_sigchld();
    let address = std::env::temp_dir().join(format!("pproc-sigchld-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&address);
    pproc::start_background(&address, square::call(12)).unwrap();
    let got: Vec<u64> = Background::connect(&address)
        .unwrap()
        .collect::<pproc::Result<_>>()
        .unwrap();
    assert_eq!(got, [144]);
}
