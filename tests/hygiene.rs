//! No zombies, no leaked descriptors, no orphans: after hundreds of
//! children, however they ended, this process looks as it did before.
//!
//! One test per concern, run one at a time: they count this process's
//! descriptors and children, which other tests running beside them would
//! change.

use std::time::Duration;

use pproc::{Channel, Error, parallel};
use pproc_workspace::{children, open_fds, process_state, serial, wait_gone};

#[parallel]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[parallel]
fn sleeps() -> u8 {
    std::thread::sleep(Duration::from_secs(600));
    0
}

#[parallel]
fn boom() {
    panic!("boom");
}

/// Starts a grandchild that sleeps, reports its pid, then sleeps too.
#[parallel]
fn middle(ch: Channel<u32, ()>) {
    let grandchild = sleeps::start().expect("a grandchild starts");
    ch.send(&grandchild.pid()).expect("the parent listens");
    std::thread::sleep(Duration::from_secs(600));
    drop(grandchild);
}

/// What the child's registry holds when it runs.
#[parallel]
fn child_registry() -> Vec<String> {
    pproc::registered().into_iter().map(String::from).collect()
}

#[test]
fn hundreds_of_children_leave_nothing_behind() {
    let _serial = serial();
    // Warm up: the spawner thread and lazy statics are created once.
    add::start(0, 0).unwrap().join().unwrap();
    let fds = open_fds();
    assert_eq!(children(), Vec::<u32>::new());

    for round in 0..60 {
        // Joined.
        assert_eq!(add::start(round, 1).unwrap().join().unwrap(), round + 1);
        // Panicked.
        assert!(matches!(
            boom::start().unwrap().join(),
            Err(Error::Panicked { .. })
        ));
        // Killed.
        let h = sleeps::start().unwrap();
        h.kill().unwrap();
        assert!(matches!(h.join(), Err(Error::Signaled { signal: 9 })));
        // Dropped while running.
        drop(sleeps::start().unwrap());
        // Timed out, then dropped.
        let mut h = sleeps::start().unwrap();
        assert!(
            h.join_timeout(Duration::from_millis(1))
                .unwrap_err()
                .is_timeout()
        );
        drop(h);
    }
    // 64 at once, dropped without joining.
    let many: Vec<_> = (0..64).map(|_| sleeps::start().unwrap()).collect();
    assert_eq!(children().len(), 64);
    drop(many);

    assert_eq!(
        children(),
        Vec::<u32>::new(),
        "zombies or live children remain"
    );
    assert_eq!(
        fds.opened_since(),
        Vec::<String>::new(),
        "descriptors leaked"
    );
}

#[test]
fn dropping_a_handle_kills_and_reaps() {
    let _serial = serial();
    let h = sleeps::start().unwrap();
    let pid = h.pid();
    assert!(matches!(process_state(pid), Some('R' | 'S')));
    drop(h);
    assert_eq!(process_state(pid), None, "the child was not reaped");
}

#[test]
fn grandchildren_die_with_their_parent() {
    let _serial = serial();
    let h = middle::start().unwrap();
    let grandchild = h.recv().unwrap();
    assert!(matches!(process_state(grandchild), Some('R' | 'S')));
    // However the middle process dies, its child dies with it.
    h.kill().unwrap();
    assert!(matches!(h.join(), Err(Error::Signaled { signal: 9 })));
    wait_gone(grandchild);
}

/// Regression: with fat LTO, constructors no longer run in link order, and
/// the dispatcher ran before some registrations (from a library crate, here
/// `pproc_workspace`). The child must see every function its parent sees.
#[test]
fn children_see_the_whole_registry() {
    let _serial = serial();
    let parent: Vec<String> = pproc::registered().into_iter().map(String::from).collect();
    assert!(
        parent
            .iter()
            .any(|name| name == pproc_workspace::double::NAME)
    );
    assert_eq!(child_registry::start().unwrap().join().unwrap(), parent);
    assert_eq!(
        pproc_workspace::double::start(4).unwrap().join().unwrap(),
        8
    );
}
