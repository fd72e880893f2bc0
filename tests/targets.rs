//! Exec by name works from every kind of target. Unit tests (in
//! `src/lib.rs`), integration tests (this crate), doctests (the facade's
//! docs), examples and benches (run by `.ci/run`) prove it each in their own
//! binary; this file runs a binary target and a raw child by hand.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use pproc::parallel;

#[parallel]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[test]
fn a_binary_target_starts_children() {
    let out = Command::new(env!("CARGO_BIN_EXE_pproc-probe"))
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    for i in 0..4 {
        // The child's println! reaches the parent's stdout...
        assert!(
            stdout.contains(&format!("says hello to probe {i}\n")),
            "{stdout}"
        );
        // ...and the results are intact.
        assert!(
            stdout.contains(&format!("result: hello, probe {i}\n")),
            "{stdout}"
        );
    }
    assert!(stdout.contains("parallel from a double: 8\n"), "{stdout}");
}

/// Runs this test binary as a child by hand, with `spec` as its dispatch
/// variable and a socket at descriptor 3, and returns its exit status.
fn raw_child(name: &str, fingerprint: u64) -> Option<i32> {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let fd = theirs.as_raw_fd();
    let spec = format!("3 {} {fingerprint:016x} c {name}", std::process::id());
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.env("PPROC_CHILD", spec).stdout(Stdio::null());
    // SAFETY: dup2 is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(fd, 3) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    drop(theirs);
    let mut ours = ours;
    // No arguments are sent: the child must stop before it waits for them.
    let _ = ours.flush();
    child.wait().unwrap().code()
}

#[test]
fn an_unknown_name_exits_with_its_own_status() {
    let fingerprint = pproc::__private::fingerprint();
    assert_eq!(
        raw_child("targets::missing", fingerprint),
        Some(pproc::EXIT_UNREGISTERED)
    );
}

#[test]
fn a_foreign_fingerprint_exits_with_its_own_status() {
    let fingerprint = !pproc::__private::fingerprint();
    assert_eq!(
        raw_child(add::NAME, fingerprint),
        Some(pproc::EXIT_VERSION_SKEW)
    );
}

#[test]
fn a_malformed_dispatch_variable_never_runs_main() {
    let out = Command::new(std::env::current_exe().unwrap())
        .env("PPROC_CHILD", "not a spec")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(pproc::EXIT_PROTOCOL));
    // The test harness's main never ran: it would have printed a summary.
    assert!(out.stdout.is_empty(), "{out:?}");
}
