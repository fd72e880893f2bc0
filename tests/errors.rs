//! Every way a child can fail arrives as its own `pproc::Error`.

use std::io::Write;
use std::os::fd::{AsRawFd, BorrowedFd};

use pproc::{Builder, Call, Channel, Error, parallel};

#[parallel]
fn boom(n: u32) -> u32 {
    if n > 1 {
        panic!("n was {n}, too many");
    }
    n
}

#[parallel]
fn boom_str() {
    panic!("plain");
}

#[parallel]
fn aborts() {
    std::process::abort();
}

#[parallel]
fn exits(code: i32) -> u8 {
    std::process::exit(code);
}

#[parallel]
fn sleeps() -> u8 {
    std::thread::sleep(std::time::Duration::from_secs(600));
    0
}

#[parallel]
fn blob(len: usize) -> Vec<u8> {
    vec![7; len]
}

#[parallel]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

/// Writes `bytes` straight onto the channel's socket, then waits.
#[parallel]
fn raw(ch: Channel<u8, u8>, bytes: Vec<u8>) {
    // SAFETY: the descriptor stays open for the whole call.
    let fd = unsafe { BorrowedFd::borrow_raw(ch.as_raw_fd()) };
    let mut file = std::fs::File::from(fd.try_clone_to_owned().expect("dup"));
    file.write_all(&bytes).expect("write");
    let _ = ch.recv();
}

#[test]
fn a_panic_carries_message_and_location() {
    match boom::start(5).unwrap().join() {
        Err(Error::Panicked {
            message, location, ..
        }) => {
            assert_eq!(message, "n was 5, too many");
            let location = location.expect("a location");
            assert!(location.starts_with("tests/errors.rs:"), "{location}");
        }
        other => panic!("unexpected {other:?}"),
    }
    let err = boom_str::start().unwrap().join().unwrap_err();
    assert!(err.is_panic());
    assert!(
        err.to_string()
            .starts_with("child panicked: plain at tests/errors.rs:"),
        "{err}"
    );
    assert_eq!(boom::start(1).unwrap().join().unwrap(), 1);
}

#[test]
fn an_abort_is_a_signal() {
    let err = aborts::start().unwrap().join().unwrap_err();
    assert!(matches!(err, Error::Signaled { signal: 6 }), "{err}");
}

#[test]
fn an_exit_without_result_gives_its_code() {
    assert!(matches!(
        exits::start(3).unwrap().join(),
        Err(Error::Exited { code: 3 })
    ));
    assert!(matches!(
        exits::start(0).unwrap().join(),
        Err(Error::Exited { code: 0 })
    ));
}

#[test]
fn kill_gives_sigkill() {
    let h = sleeps::start().unwrap();
    assert!(!h.is_finished().unwrap());
    h.kill().unwrap();
    let err = h.join().unwrap_err();
    assert!(matches!(err, Error::Signaled { signal: 9 }), "{err}");
    assert_eq!(err.to_string(), "child was killed by signal 9 (SIGKILL)");
}

#[test]
fn a_kill_from_outside_is_a_signal() {
    let h = sleeps::start().unwrap();
    // SAFETY: kill(2) with a valid pid and signal number.
    assert_eq!(unsafe { libc::kill(h.pid() as i32, libc::SIGTERM) }, 0);
    assert!(matches!(h.join(), Err(Error::Signaled { signal: 15 })));
}

#[test]
fn garbage_frames_are_codec_errors() {
    // A well-framed body with an unknown tag.
    let err = raw::start(vec![3, 0, 0, 0, 99, 1, 2])
        .unwrap()
        .join()
        .unwrap_err();
    assert!(matches!(err, Error::Codec { .. }), "{err}");
    // A result frame whose payload is not a `()`... there is none; a data
    // frame that does not decode as `u8`.
    let h = raw::start(vec![3, 0, 0, 0, 2, 0xff, 0xff]).unwrap();
    assert!(matches!(h.recv(), Err(Error::Codec { .. })));
    // An empty frame.
    let err = raw::start(vec![0, 0, 0, 0]).unwrap().join().unwrap_err();
    assert!(matches!(err, Error::Codec { .. }), "{err}");
}

#[test]
fn a_huge_length_is_refused_without_allocating() {
    let err = raw::start(vec![0xf0, 0xff, 0xff, 0xff, 2])
        .unwrap()
        .join()
        .unwrap_err();
    match err {
        Error::Codec { message } => assert!(message.contains("exceeds the limit"), "{message}"),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn the_frame_limit_is_enforced() {
    let limited = Builder::new().max_frame(64 * 1024);
    assert_eq!(
        limited
            .start(blob::call(1000))
            .unwrap()
            .join()
            .unwrap()
            .len(),
        1000
    );
    let err = limited
        .start(blob::call(100_000))
        .unwrap()
        .join()
        .unwrap_err();
    assert!(matches!(err, Error::Codec { .. }), "{err}");
}

#[test]
fn type_mismatches_are_codec_errors() {
    // The result is an `i64`, read as a `String`.
    let err = Call::<String>::new(add::NAME, &(1i64, 2i64))
        .start()
        .unwrap()
        .join();
    assert!(matches!(err, Err(Error::Codec { .. })), "{err:?}");
    // The arguments are not `(i64, i64)`.
    let err = Call::<i64>::new(add::NAME, &"nope")
        .start()
        .unwrap()
        .join()
        .unwrap_err();
    match err {
        Error::Codec { message } => assert!(message.contains("arguments"), "{message}"),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn another_build_is_version_skew() {
    let probe = env!("CARGO_BIN_EXE_pproc-probe");
    let err = Builder::new()
        .program(probe)
        .start(add::call(1, 2))
        .unwrap()
        .join()
        .unwrap_err();
    assert!(matches!(err, Error::VersionSkew { .. }), "{err}");
}

#[test]
fn a_missing_program_is_a_spawn_error() {
    let err = Builder::new()
        .program("/nonexistent/program")
        .start(add::call(1, 2))
        .unwrap_err();
    assert!(
        matches!(&err, Error::Spawn(io) if io.kind() == std::io::ErrorKind::NotFound),
        "{err}"
    );
}

/// Each cause's text appears once in `err`'s chain joined as anyhow's `{:#}`
/// joins it: no layer's `Display` repeats what its `source()` returns.
fn assert_each_cause_once(err: &Error) {
    let texts: Vec<String> =
        std::iter::successors(Some(err as &(dyn std::error::Error + 'static)), |e| {
            e.source()
        })
        .map(ToString::to_string)
        .collect();
    assert!(texts.len() > 1, "{err:?} has no source");
    let joined = texts.join(": ");
    for text in &texts {
        assert_eq!(
            joined.matches(text.as_str()).count(),
            1,
            "{text:?} repeats in {joined:?}"
        );
    }
}

#[test]
fn causes_print_once_in_the_source_chain() {
    let err = Builder::new()
        .program("/nonexistent/program")
        .start(add::call(1, 2))
        .unwrap_err();
    assert!(matches!(err, Error::Spawn(_)), "{err:?}");
    assert_each_cause_once(&err);
    let nowhere = std::env::temp_dir().join("pproc-no-such-dir/errors.sock");
    let err = pproc::start_background(&nowhere, add::call(1, 2)).unwrap_err();
    assert!(matches!(err, Error::Io(_)), "{err:?}");
    assert_each_cause_once(&err);
    assert_each_cause_once(&Error::Io(std::io::Error::other("disk on fire")));
}

#[test]
fn errors_are_std_errors() {
    fn check(_: &(dyn std::error::Error + Send + Sync + 'static)) {}
    check(&Error::Timeout);
    let err = Builder::new()
        .program("/nonexistent/program")
        .start(add::call(1, 2))
        .unwrap_err();
    assert!(std::error::Error::source(&err).is_some());
}
