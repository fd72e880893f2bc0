//! Channel-style children in an exchange: first values, continuous streams,
//! autoclose, remove, and fork-style `create`.
//!
//! Tests count this process's children: every test holds `serial()`, so that
//! no other test's children are counted with theirs.

use std::io::Write;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

use pproc::{Call, Channel, Error, Exchange, Handle, Origin, Store, Streams, parallel};
use pproc_workspace::{Bounded, Tolerant, children, open_fds, serial};

/// Sends `(i, j)` for `j` in `0..n`, `ms` milliseconds apart.
#[parallel]
fn row(ch: Channel<(u64, u64)>, i: u64, n: u64, ms: u64) {
    for j in 0..n {
        std::thread::sleep(Duration::from_millis(ms));
        ch.send(&(i, j)).expect("the parent reads on");
    }
}

/// Sends `i`, then waits for its parent to say something: only a closed
/// channel lets it end.
#[parallel]
fn first_then_wait(ch: Channel<u64>, i: u64) -> bool {
    ch.send(&i).expect("the first value goes through");
    // `Disconnected`, once the exchange has closed the channel.
    ch.recv().is_err()
}

/// Sends `i`, then lingers without reading its channel.
#[parallel]
fn first_then_linger(ch: Channel<u64>, i: u64, ms: u64) {
    ch.send(&i).expect("the first value goes through");
    std::thread::sleep(Duration::from_millis(ms));
}

/// Returns `ms` after `ms` milliseconds.
#[parallel]
fn after(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// Sends its value, then answers one question: `x` with `x + 1`.
#[parallel]
fn then_answer(ch: Channel<u64, u64>, first: u64) {
    ch.send(&first).expect("first value");
    if let Ok(x) = ch.recv() {
        ch.send(&(x + 1)).expect("answer");
    }
}

/// Sends `good`, then writes `bytes` straight onto the channel's socket.
#[parallel]
fn good_then_garbage(ch: Channel<u64>, good: u64, bytes: Vec<u8>) {
    ch.send(&good).expect("the first value goes through");
    // SAFETY: the descriptor stays open for the whole call.
    let fd = unsafe { BorrowedFd::borrow_raw(ch.as_raw_fd()) };
    let mut file = std::fs::File::from(fd.try_clone_to_owned().expect("dup"));
    file.write_all(&bytes).expect("write");
}

/// Kills call 77 from outside once it has sent two values; keeps values
/// and failures as [`Tolerant`] does.
#[derive(Default)]
struct KillsCall77(Tolerant<(u64, u64)>);

impl Store<(u64, u64)> for KillsCall77 {
    fn store(&mut self, value: (u64, u64), origin: &Origin<'_>) -> pproc::Result<()> {
        if origin.index() == 77 && value.1 == 1 {
            let pid = i32::try_from(origin.pid().expect("it runs")).unwrap();
            // SAFETY: kill(2) on a child that is not reaped yet.
            assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
        }
        self.0.store(value, origin)
    }

    fn failed(&mut self, error: Error, origin: &Origin<'_>) -> pproc::Result<()> {
        self.0.failed(error, origin)
    }
}

#[test]
fn a_streaming_call_delivers_its_first_value_by_default() {
    let _serial = serial();
    let mut ex = Exchange::new(Vec::new()).limit(2);
    for i in 0..6 {
        ex.start(row::call(i, 3, 0)).unwrap();
    }
    let mut firsts: Vec<(u64, u64)> = ex.finish().unwrap();
    firsts.sort_unstable();
    assert_eq!(firsts, (0..6).map(|i| (i, 0)).collect::<Vec<_>>());
    assert_eq!(children(), Vec::<u32>::new());
}

#[test]
fn continuous_stores_every_value_with_its_origin() {
    let _serial = serial();
    let mut ex = Exchange::new(KillsCall77::default())
        .limit(3)
        .continuous(true);
    for i in 0..10 {
        assert_eq!(ex.start(row::call(i, 10, 1)).unwrap(), i as usize);
    }
    let done = ex.finish().unwrap().0;
    assert!(done.failures.is_empty());
    assert_eq!(done.values.len(), 100);
    for (index, (i, _)) in &done.values {
        assert_eq!(*index as u64, *i);
    }
    // Each child's values arrive in the order it sent them.
    for i in 0..10 {
        let js: Vec<u64> = done
            .values
            .iter()
            .filter(|(_, (ci, _))| *ci == i)
            .map(|(_, (_, j))| *j)
            .collect();
        assert_eq!(js, (0..10).collect::<Vec<_>>());
    }
}

#[test]
fn a_streaming_child_killed_mid_stream_fails_only_its_call() {
    let _serial = serial();
    let fds = open_fds();
    let mut ex = Exchange::new(KillsCall77::default())
        .limit(4)
        .continuous(true);
    for i in 0..200 {
        ex.start(row::call(i, 5, if i == 77 { 50 } else { 0 }))
            .unwrap();
    }
    let done = ex.finish().unwrap().0;
    assert_eq!(done.failures.len(), 1, "{:?}", done.failures);
    assert_eq!(done.failures[0].0, 77);
    assert!(
        matches!(done.failures[0].1, Error::Signaled { signal: 9 }),
        "{:?}",
        done.failures[0].1
    );
    // Every other call delivered all five values; the victim two.
    assert_eq!(done.values.len(), 199 * 5 + 2);
    let victim: Vec<_> = done.values.iter().filter(|(i, _)| *i == 77).collect();
    assert_eq!(victim.len(), 2);
    assert_eq!(children(), Vec::<u32>::new());
    assert_eq!(
        fds.opened_since(),
        Vec::<String>::new(),
        "descriptors leaked"
    );
}

#[test]
fn autoclose_closes_the_channel_of_a_delivered_child() {
    let _serial = serial();
    // With a limit of 1, each call starts only once the one before has
    // exited, and `first_then_wait` exits only when its channel closes.
    let mut ex = Exchange::new(Vec::new()).limit(1);
    for i in 0..4 {
        ex.start(first_then_wait::call(i)).unwrap();
    }
    assert_eq!(ex.finish().unwrap(), [0, 1, 2, 3]);
    assert_eq!(children(), Vec::<u32>::new());
}

#[test]
fn delivered_children_keep_their_place_until_they_exit() {
    let _serial = serial();
    let mut ex = Exchange::new(Bounded::new(2)).limit(2);
    for i in 0..10 {
        ex.start(first_then_linger::call(i, 100)).unwrap();
        assert!(children().len() <= 2, "the limit was exceeded");
    }
    while ex.unfinished() {
        ex.store(Some(Duration::from_millis(5))).unwrap();
        assert!(children().len() <= 2, "the limit was exceeded");
    }
    let bounded = ex.finish().unwrap();
    assert_eq!(bounded.count, 10);
    assert_eq!(bounded.most, 2, "two children should have run at once");
    assert_eq!(children(), Vec::<u32>::new());
}

#[test]
fn without_autoclose_a_delivered_child_can_be_taken_and_talked_to() {
    let _serial = serial();
    let mut ex = Exchange::new(Vec::new()).autoclose(false);
    let index = ex.start(then_answer::call(7)).unwrap();
    while ex.get_ref().is_empty() {
        ex.store(None).unwrap();
    }
    assert_eq!(ex.get_ref(), &[7]);
    assert!(!ex.unfinished(), "its call has delivered");
    let h: Handle<(), u64, u64, Streams> = ex.remove(index).unwrap().expect("kept open");
    h.send(&41).unwrap();
    assert_eq!(h.recv().unwrap(), 42);
    h.join().unwrap();
    assert_eq!(ex.finish().unwrap(), [7]);
}

#[test]
fn finish_closes_children_kept_open() {
    let _serial = serial();
    let mut ex = Exchange::new(Vec::new()).autoclose(false).limit(2);
    for i in 0..2 {
        ex.start(first_then_wait::call(i)).unwrap();
    }
    let mut firsts = ex.finish().unwrap();
    firsts.sort_unstable();
    assert_eq!(firsts, [0, 1]);
    assert_eq!(children(), Vec::<u32>::new());
}

#[test]
fn remove_cancels_a_queued_call_and_takes_a_running_one() {
    let _serial = serial();
    let mut ex = Exchange::new(Vec::new()).limit(1);
    let running = ex.start(row::call(1, 1, 60_000)).unwrap();
    let queued = ex.start(row::call(2, 1, 0)).unwrap();
    let last = ex.start(row::call(3, 1, 0)).unwrap();
    assert_eq!(last, 2);
    assert!(
        ex.remove::<(), (), (u64, u64), Streams>(queued)
            .unwrap()
            .is_none()
    );
    let h: Handle<(), (), (u64, u64), Streams> = ex.remove(running).unwrap().expect("running");
    let pid = h.pid();
    drop(h);
    assert!(!children().contains(&pid), "dropping the handle reaps it");
    assert!(
        ex.remove::<(), (), (u64, u64), Streams>(99)
            .unwrap()
            .is_none()
    );
    assert_eq!(ex.finish().unwrap(), [(3, 0)]);
}

#[test]
fn reused_workers_stream_too() {
    let _serial = serial();
    let mut ex = Exchange::new(Vec::new())
        .limit(2)
        .reuse(true)
        .continuous(true);
    for i in 0..8 {
        ex.start(row::call(i, 4, 0)).unwrap();
    }
    let mut all: Vec<(u64, u64)> = ex.finish().unwrap();
    all.sort_unstable();
    let want: Vec<_> = (0..8).flat_map(|i| (0..4).map(move |j| (i, j))).collect();
    assert_eq!(all, want);

    // Without `continuous`, a worker delivers each call's first value.
    let mut ex = Exchange::new(Vec::new()).limit(2).reuse(true);
    for i in 0..8 {
        ex.start(row::call(i, 4, 0)).unwrap();
    }
    let mut firsts: Vec<(u64, u64)> = ex.finish().unwrap();
    firsts.sort_unstable();
    assert_eq!(firsts, (0..8).map(|i| (i, 0)).collect::<Vec<_>>());
    assert_eq!(children(), Vec::<u32>::new());
}

#[test]
fn created_children_send_their_values_and_are_reaped() {
    let _serial = serial();
    let fds = open_fds();
    let mut ex = Exchange::new(Bounded::new(3)).limit(3).continuous(true);
    for i in 0..12_u64 {
        // SAFETY: the closure takes no lock that another thread holds.
        unsafe {
            ex.create(move |ch: Channel<u64>| {
                std::thread::sleep(Duration::from_millis(5));
                ch.send(&i).unwrap();
                ch.send(&(i + 100)).unwrap();
            })
            .unwrap();
        }
        assert!(children().len() <= 3, "the limit was exceeded");
    }
    let bounded = ex.finish().unwrap();
    assert_eq!(bounded.count, 24);
    assert_eq!(children(), Vec::<u32>::new());
    assert_eq!(
        fds.opened_since(),
        Vec::<String>::new(),
        "descriptors leaked"
    );
}

#[test]
fn a_created_child_that_panics_is_a_failure_and_the_parent_goes_on() {
    let _serial = serial();
    let mut ex = Exchange::new(Vec::<u64>::new());
    // SAFETY: the closure takes no lock that another thread holds.
    let index = unsafe {
        ex.create(|_: Channel<u64>| panic!("forked and failed"))
            .unwrap()
    };
    match ex.finish() {
        Err(Error::Panicked {
            message, location, ..
        }) => {
            assert_eq!(message, "forked and failed");
            assert!(location.unwrap().contains("streams.rs"));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(index, 0);
    // The parent is still itself: the child never returned here.
    assert_eq!(children(), Vec::<u32>::new());
}

#[test]
fn a_created_child_can_start_children_of_its_own() {
    let _serial = serial();
    // The parent's spawner thread is not in the forked child: the child
    // needs one of its own.
    pproc_workspace::double::start(1).unwrap().join().unwrap();
    let mut ex = Exchange::new(Vec::<u64>::new());
    // SAFETY: the closure takes no lock that another thread holds.
    unsafe {
        ex.create(|ch: Channel<u64>| {
            let doubled = pproc_workspace::double::start(21).unwrap().join().unwrap();
            ch.send(&doubled).unwrap();
        })
        .unwrap();
    }
    assert_eq!(ex.finish().unwrap(), [42]);
}

#[test]
fn origins_name_created_children() {
    let _serial = serial();
    struct Names(Vec<String>);
    impl Store<u8> for Names {
        fn store(&mut self, _value: u8, origin: &Origin<'_>) -> pproc::Result<()> {
            self.0.push(origin.name().to_owned());
            Ok(())
        }
    }
    let mut ex = Exchange::new(Names(Vec::new()));
    // SAFETY: the closure takes no lock that another thread holds.
    unsafe {
        ex.create(|ch: Channel<u8>| ch.send(&1).unwrap()).unwrap();
    }
    assert_eq!(ex.finish().unwrap().0, ["pproc::create"]);
}

#[test]
fn garbage_in_a_stream_fails_that_call_only() {
    let _serial = serial();
    let fds = open_fds();
    #[derive(Default)]
    struct Seen {
        values: Vec<u64>,
        failures: Vec<(usize, Error)>,
    }
    impl Store<u64> for Seen {
        fn store(&mut self, value: u64, _: &Origin<'_>) -> pproc::Result<()> {
            self.values.push(value);
            Ok(())
        }
        fn failed(&mut self, error: Error, origin: &Origin<'_>) -> pproc::Result<()> {
            self.failures.push((origin.index(), error));
            Ok(())
        }
    }
    let mut ex = Exchange::new(Seen::default()).continuous(true).limit(3);
    // A data frame that does not decode as `u64`, a frame over the limit,
    // an unknown tag; and a well-behaved stream beside them.
    ex.start(good_then_garbage::call(1, vec![3, 0, 0, 0, 2, 0xff, 0xff]))
        .unwrap();
    ex.start(good_then_garbage::call(2, vec![0xf0, 0xff, 0xff, 0xff, 2]))
        .unwrap();
    ex.start(good_then_garbage::call(3, vec![2, 0, 0, 0, 99, 1]))
        .unwrap();
    // A call built by name with the wrong type: `row` sends pairs, not
    // `u64`s, so each of its values fails to decode, a failure of call 3,
    // and the stream goes on.
    let mistyped: Call<(), (), u64, Streams> = Call::new(row::NAME, &(4_u64, 3_u64, 0_u64));
    ex.start(mistyped).unwrap();
    let seen = ex.finish().unwrap();
    let mut values = seen.values;
    values.sort_unstable();
    assert_eq!(values, [1, 2, 3]);
    let mut failed: Vec<usize> = seen.failures.iter().map(|(i, _)| *i).collect();
    failed.sort_unstable();
    assert_eq!(failed, [0, 1, 2, 3, 3, 3]);
    assert!(
        seen.failures
            .iter()
            .all(|(_, e)| matches!(e, Error::Codec { .. })),
        "{:?}",
        seen.failures
    );
    assert_eq!(children(), Vec::<u32>::new());
    assert_eq!(
        fds.opened_since(),
        Vec::<String>::new(),
        "descriptors leaked"
    );
}

#[test]
fn added_streaming_handles_deliver_what_they_send() {
    let _serial = serial();
    let mut ex = Exchange::new(Vec::new()).continuous(true);
    let h: Handle<(), (), (u64, u64), Streams> = row::start(9, 3, 0).unwrap();
    assert_eq!(ex.add(h).unwrap(), 0);
    assert_eq!(ex.add_wait(row::start(8, 2, 0).unwrap()).unwrap(), 1);
    let mut all: Vec<(u64, u64)> = ex.finish().unwrap();
    all.sort_unstable();
    assert_eq!(all, [(8, 0), (8, 1), (9, 0), (9, 1), (9, 2)]);
    assert_eq!(children(), Vec::<u32>::new());
}

#[test]
fn ready_waits_through_the_exit_of_a_delivered_child() {
    let _serial = serial();
    let mut ex = Exchange::new(Vec::new());
    ex.start(first_then_linger::call(0, 100)).unwrap();
    while ex.get_ref().is_empty() {
        ex.store(None).unwrap();
    }
    // Call 0 has delivered and lingers; its exit is no news for `ready`.
    let late = ex.start(after::call(300)).unwrap();
    let ready = ex.ready(Some(Duration::from_secs(30))).unwrap();
    assert_eq!(ready, [late]);
    assert_eq!(ex.finish().unwrap(), [0, 300]);
}

#[test]
fn the_store_hears_when_each_call_ends() {
    let _serial = serial();
    #[derive(Default)]
    struct Ends {
        values: usize,
        failures: usize,
        ended: Vec<usize>,
    }
    impl Store<(u64, u64)> for Ends {
        fn store(&mut self, _: (u64, u64), origin: &Origin<'_>) -> pproc::Result<()> {
            assert!(
                !self.ended.contains(&origin.index()),
                "a value after the end"
            );
            self.values += 1;
            Ok(())
        }
        fn failed(&mut self, _: Error, _: &Origin<'_>) -> pproc::Result<()> {
            self.failures += 1;
            Ok(())
        }
        fn ended(&mut self, origin: &Origin<'_>) -> pproc::Result<()> {
            self.ended.push(origin.index());
            Ok(())
        }
    }
    for (continuous, reuse) in [(true, false), (false, false), (true, true), (false, true)] {
        let mut ex = Exchange::new(Ends::default())
            .limit(2)
            .continuous(continuous)
            .reuse(reuse);
        for i in 0..6 {
            ex.start(row::call(i, 3, 0)).unwrap();
        }
        // One that cannot start, one whose values do not decode.
        ex.start(Call::<(), (), (u64, u64), Streams>::new(
            "no::such::fn",
            &(),
        ))
        .unwrap();
        ex.start(Call::<(), (), (u64, u64), Streams>::new(
            first_then_linger::NAME,
            &(1_u64, 0_u64),
        ))
        .unwrap();
        let ends = ex.finish().unwrap();
        let mut ended = ends.ended;
        ended.sort_unstable();
        assert_eq!(ended, (0..8).collect::<Vec<_>>(), "{continuous} {reuse}");
        let per_call = if continuous { 3 } else { 1 };
        assert_eq!(ends.values, 6 * per_call, "{continuous} {reuse}");
        assert!(ends.failures >= 2, "{continuous} {reuse}");
    }
}
