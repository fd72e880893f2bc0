//! pprocess-style channels: both ends send and receive while the child runs.

use std::time::{Duration, Instant};

use pproc::{Channel, Error, parallel};

#[parallel]
fn count_to(ch: Channel<u64, String>, n: u64) -> usize {
    let greeting = ch.recv().unwrap();
    for i in 0..n {
        ch.send(&i).unwrap();
    }
    greeting.len()
}

/// Echoes what it receives until the parent says 0.
#[parallel]
fn echo(ch: Channel<u64, u64>) -> u64 {
    let mut seen = 0;
    while let Ok(x) = ch.recv() {
        if x == 0 {
            break;
        }
        seen += 1;
        ch.send(&x).unwrap();
    }
    seen
}

/// Sends `first` values at once, waits for a word from the parent, then
/// sends `then` more.
#[parallel]
fn bursts(ch: Channel<u32, ()>, first: u32, then: u32) {
    for i in 0..first {
        ch.send(&i).unwrap();
    }
    ch.recv().unwrap();
    for i in first..first + then {
        ch.send(&i).unwrap();
    }
}

/// Sends a big payload and receives one at the same time as the parent.
#[parallel]
fn swap(ch: Channel<Vec<u8>, Vec<u8>>, len: usize) -> usize {
    ch.send(&vec![1; len]).unwrap();
    ch.recv().unwrap().len()
}

/// Sends `n` values and returns at once: none may be lost.
#[parallel]
fn flood(ch: Channel<u32, ()>, n: u32) -> u32 {
    for i in 0..n {
        ch.send(&i).unwrap();
    }
    n
}

#[parallel]
fn child_timeout(ch: Channel<bool, u8>) -> bool {
    let timed_out = ch
        .recv_timeout(Duration::from_millis(20))
        .is_err_and(|e| e.is_timeout());
    ch.send(&timed_out).unwrap();
    let got = ch.recv().unwrap();
    timed_out && got == 9 && ch.try_recv().unwrap().is_none()
}

#[parallel]
fn panics_after(ch: Channel<u8, ()>, n: u8) {
    for i in 0..n {
        ch.send(&i).unwrap();
    }
    panic!("stopped at {n}");
}

/// Waits for the child to exit, without reaping it through `join`.
fn wait_finished<R, S, V, K>(h: &pproc::Handle<R, S, V, K>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !h.is_finished().unwrap() {
        assert!(Instant::now() < deadline, "the child did not finish");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn the_spec_example_works() {
    let h = count_to::start(3).unwrap();
    h.send(&"hello".to_string()).unwrap();
    let got: Vec<u64> = (0..3).map(|_| h.recv()).collect::<Result<_, _>>().unwrap();
    assert_eq!(got, [0, 1, 2]);
    assert_eq!(h.join().unwrap(), 5);
}

#[test]
fn values_go_both_ways() {
    let h = echo::start().unwrap();
    for x in 1..=100u64 {
        h.send(&x).unwrap();
        assert_eq!(h.recv().unwrap(), x);
    }
    h.send(&0).unwrap();
    assert_eq!(h.join().unwrap(), 100);
}

#[test]
fn recv_timeout_leaves_the_handle_usable() {
    let h = echo::start().unwrap();
    assert!(matches!(
        h.recv_timeout(Duration::from_millis(30)),
        Err(Error::Timeout)
    ));
    assert_eq!(h.try_recv().unwrap(), None);
    h.send(&7).unwrap();
    assert_eq!(h.recv_timeout(Duration::from_secs(30)).unwrap(), 7);
    h.send(&0).unwrap();
    assert_eq!(h.join().unwrap(), 1);
}

#[test]
fn join_timeout_keeps_the_child_running() {
    let mut h = echo::start().unwrap();
    assert!(matches!(
        h.join_timeout(Duration::from_millis(30)),
        Err(Error::Timeout)
    ));
    assert!(!h.is_finished().unwrap());
    h.send(&5).unwrap();
    assert_eq!(h.recv().unwrap(), 5);
    h.send(&0).unwrap();
    assert_eq!(h.join_timeout(Duration::from_secs(30)).unwrap(), 1);
    assert!(h.is_finished().unwrap());
}

#[test]
fn join_timeout_keeps_values_for_recv() {
    let mut h = flood::start(10).unwrap();
    assert_eq!(h.join_timeout(Duration::from_secs(30)).unwrap(), 10);
    let got: Vec<u32> = h.iter().collect::<pproc::Result<_>>().unwrap();
    assert_eq!(got, (0..10).collect::<Vec<_>>());
}

#[test]
fn recv_batch_waits_for_the_first_then_fills() {
    let h = bursts::start(5, 2).unwrap();
    // Five are sent at once: a batch of three takes three, then two.
    assert_eq!(h.recv_batch(3, Duration::from_secs(30)).unwrap(), [0, 1, 2]);
    assert_eq!(h.recv_batch(2, Duration::from_secs(30)).unwrap(), [3, 4]);
    assert_eq!(h.recv_batch(0, Duration::ZERO).unwrap(), Vec::<u32>::new());
    h.send(&()).unwrap();
    // The child sends two more and ends: the batch ends with them, and the
    // end is reported by the next receive.
    assert_eq!(h.recv_batch(10, Duration::from_secs(30)).unwrap(), [5, 6]);
    assert!(matches!(h.recv(), Err(Error::Disconnected)));
    h.join().unwrap();
}

#[test]
fn recv_batch_gives_up_filling_after_its_timeout() {
    // One value, then the child waits for the parent: nothing more can come.
    let h = bursts::start(1, 0).unwrap();
    let start = Instant::now();
    assert_eq!(h.recv_batch(10, Duration::from_millis(50)).unwrap(), [0]);
    assert!(start.elapsed() >= Duration::from_millis(50));
    h.send(&()).unwrap();
    h.join().unwrap();
}

#[test]
fn big_payloads_both_ways_at_once() {
    let len = 8 << 20;
    let h = swap::start(len).unwrap();
    // Parent and child both send first: without draining each other while
    // writing, both would block forever.
    h.send(&vec![2; len]).unwrap();
    let got = h.recv().unwrap();
    assert_eq!(got.len(), len);
    assert!(got.iter().all(|&b| b == 1));
    assert_eq!(h.join().unwrap(), len);
}

#[test]
fn empty_and_odd_sized_payloads() {
    for len in [0, 1, 65_535, 65_536, 65_537, 200_000] {
        let h = swap::start(len).unwrap();
        h.send(&vec![2; len]).unwrap();
        assert_eq!(h.recv().unwrap().len(), len);
        assert_eq!(h.join().unwrap(), len);
    }
}

#[test]
fn values_sent_before_exit_are_not_lost() {
    // As many as the socket buffers without a reader.
    let h = flood::start(100).unwrap();
    // Let the child finish and exit before reading anything.
    wait_finished(&h);
    let got: Vec<u32> = h.iter().collect::<pproc::Result<_>>().unwrap();
    assert_eq!(got, (0..100).collect::<Vec<_>>());
    assert!(matches!(h.recv(), Err(Error::Disconnected)));
    assert_eq!(h.join().unwrap(), 100);
}

#[test]
fn the_child_end_has_the_receive_family() {
    let h = child_timeout::start().unwrap();
    assert!(h.recv().unwrap(), "the child's recv_timeout timed out");
    h.send(&9).unwrap();
    assert!(h.join().unwrap());
}

#[test]
fn an_iterator_ends_with_the_child_panic() {
    let h = panics_after::start(3).unwrap();
    let got: Vec<_> = h.iter().collect();
    assert_eq!(got.len(), 4);
    assert!(got[..3].iter().all(Result::is_ok));
    assert!(matches!(&got[3], Err(Error::Panicked { message, .. }) if message == "stopped at 3"));
    assert!(matches!(h.join(), Err(Error::Panicked { .. })));
}

#[test]
fn sending_to_a_finished_child_is_disconnected() {
    let h = flood::start(0).unwrap();
    wait_finished(&h);
    let mut result = Ok(());
    // The first write may still land in the socket buffer.
    for _ in 0..2 {
        result = h.send(&());
    }
    assert!(matches!(result, Err(Error::Disconnected)), "{result:?}");
    assert_eq!(h.join().unwrap(), 0);
}
