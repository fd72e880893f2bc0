//! Joining many children: `join_all` under one deadline, `select` and
//! `join_any` for the first to finish, `waitall`.
//!
//! Tests count this process's children: every test holds `serial()`.

use std::collections::HashSet;
use std::time::Duration;

use pproc::{Error, parallel};
use pproc_workspace::{children, open_fds, serial};

/// Sleeps `ms`; fails as asked: 1 panics, 2 kills itself.
#[parallel]
fn task(ms: u64, fate: u8) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    match fate {
        1 => panic!("task of {ms} ms failed"),
        // SAFETY: raise(3) with a valid signal.
        2 => unsafe {
            libc::raise(libc::SIGKILL);
        },
        _ => {}
    }
    ms
}

#[test]
fn join_all_returns_every_result_in_order() {
    let _serial = serial();
    let handles = [(30, 0), (0, 1), (10, 2), (0, 0)]
        .into_iter()
        .map(|(ms, fate)| task::start(ms, fate))
        .collect::<pproc::Result<Vec<_>>>()
        .unwrap();
    let results = pproc::join_all(handles, Some(Duration::from_secs(120)));
    assert_eq!(results.len(), 4);
    assert_eq!(*results[0].as_ref().unwrap(), 30);
    assert!(
        matches!(&results[1], Err(Error::Panicked { message, .. }) if message == "task of 0 ms failed")
    );
    assert!(matches!(results[2], Err(Error::Signaled { signal: 9 })));
    assert_eq!(*results[3].as_ref().unwrap(), 0);
    assert_eq!(children(), Vec::<u32>::new());
}

#[test]
fn join_all_past_its_deadline_kills_and_reaps_the_rest() {
    let _serial = serial();
    let fds = open_fds();
    let handles = [0, 600_000, 0, 600_000]
        .into_iter()
        .map(|ms| task::start(ms, 0))
        .collect::<pproc::Result<Vec<_>>>()
        .unwrap();
    let got = pproc::join_all(handles, Some(Duration::from_millis(300)));
    // The third child is looked at after the deadline, which passed while
    // the second was awaited: finished, it keeps its result.
    assert_eq!(got.len(), 4);
    assert_eq!(*got[0].as_ref().unwrap(), 0);
    assert!(matches!(got[1], Err(Error::Timeout)), "{:?}", got[1]);
    assert_eq!(*got[2].as_ref().unwrap(), 0);
    assert!(matches!(got[3], Err(Error::Timeout)), "{:?}", got[3]);
    assert_eq!(children(), Vec::<u32>::new(), "every child was reaped");
    assert_eq!(pproc::children(), Vec::new());
    assert_eq!(
        fds.opened_since(),
        Vec::<String>::new(),
        "descriptors leaked"
    );
}

#[test]
fn select_finds_the_first_to_finish_and_keeps_the_rest() {
    let _serial = serial();
    let mut handles = vec![
        task::start(600_000, 0).unwrap(),
        task::start(0, 0).unwrap(),
        task::start(600_000, 0).unwrap(),
    ];
    assert_eq!(pproc::select(&handles, None).unwrap(), 1);
    assert_eq!(handles.remove(1).join().unwrap(), 0);
    assert!(matches!(
        pproc::select(&handles, Some(Duration::from_millis(50))),
        Err(Error::Timeout)
    ));
    // The others are untouched: still running, still joinable.
    for h in &handles {
        assert!(!h.is_finished().unwrap());
        h.kill().unwrap();
    }
    let (i, result) = pproc::join_any(&mut handles, None).unwrap();
    assert!(i < 2);
    assert!(matches!(result, Err(Error::Signaled { signal: 9 })));
    assert_eq!(handles.len(), 1);
    assert!(matches!(
        pproc::select::<u64, (), (), pproc::Returns>(&[], None),
        Err(Error::Io(_))
    ));
}

#[test]
fn join_any_takes_children_in_the_order_they_finish() {
    let _serial = serial();
    let mut handles: Vec<_> = [400, 0, 200]
        .into_iter()
        .map(|ms| task::start(ms, 0).unwrap())
        .collect();
    let mut order = Vec::new();
    while !handles.is_empty() {
        let (_, result) = pproc::join_any(&mut handles, None).unwrap();
        order.push(result.unwrap());
    }
    assert_eq!(order, [0, 200, 400]);
}

#[test]
fn waitall_waits_for_every_child_and_leaves_the_results() {
    let _serial = serial();
    let handles: Vec<_> = [50, 0, 100]
        .into_iter()
        .map(|ms| task::start(ms, 0).unwrap())
        .collect();
    pproc::waitall(None).unwrap();
    for h in &handles {
        assert!(h.is_finished().unwrap());
    }
    let results: HashSet<u64> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(results, HashSet::from([0, 50, 100]));

    let slow = task::start(600_000, 0).unwrap();
    assert!(matches!(
        pproc::waitall(Some(Duration::from_millis(50))),
        Err(Error::Timeout)
    ));
    assert!(!slow.is_finished().unwrap(), "waitall leaves it running");
}
