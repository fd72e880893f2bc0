//! Values gathered into few writes: every one arrives, in order, and in
//! time; none sent before a flush is lost when the sender dies; request
//! and reply answer at once. (Ignored, for measuring: the rate of a
//! stream against a bare socketpair that gathers the same frames.)

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use pproc::{Channel, Error, Reply, Request, parallel};

/// Sends `0..n`, writing each value at once if `through` is set.
#[parallel]
fn count(ch: Channel<u64>, n: u64, through: bool) {
    if through {
        ch.set_flush_after(Duration::ZERO);
    }
    for i in 0..n {
        ch.send(&i).expect("the parent reads on");
    }
}

/// Sends `0..n` without a pause, sleeps without flushing, then sends `n`.
#[parallel]
fn burst_then_sleep(ch: Channel<u64>, n: u64, secs: u64) {
    for i in 0..n {
        ch.send(&i).expect("the parent reads on");
    }
    std::thread::sleep(Duration::from_secs(secs));
    ch.send(&n).expect("the parent reads on");
}

/// Sends `0..n`, flushes, then dies by `SIGKILL`.
#[parallel]
fn send_then_die(ch: Channel<u64>, n: u64) {
    for i in 0..n {
        ch.send(&i).expect("the parent reads on");
    }
    ch.flush().expect("the parent reads on");
    // SAFETY: kill(2) on this very process.
    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
}

/// Sends `0..n` and an error, then panics.
#[parallel]
fn send_then_panic(ch: Channel<u64>, n: u64) {
    for i in 0..n {
        ch.send(&i).expect("the parent reads on");
    }
    ch.send_error("last words").expect("the parent reads on");
    panic!("after {n} values");
}

/// Sends `rounds` runs of small values, each run followed by a value of
/// `big` numbers, which crosses the socket in many reads.
#[parallel]
fn small_and_big(ch: Channel<Vec<u64>>, rounds: u64, small: u64, big: u64) {
    for round in 0..rounds {
        for i in 0..small {
            ch.send(&vec![round, i]).expect("the parent reads on");
        }
        let big: Vec<u64> = (0..big).map(|i| i * round).collect();
        ch.send(&big).expect("the parent reads on");
    }
}

/// Sums what the parent sends, until it closes its end.
#[parallel]
fn sum(ch: Channel<(), u64>) -> u64 {
    ch.iter().map(|n| n.expect("a value")).sum()
}

/// Sends back the sum of each two values it gets.
#[parallel]
fn add_pairs(ch: Channel<u64, u64>) {
    while let (Ok(a), Ok(b)) = (ch.recv(), ch.recv()) {
        ch.send(&(a + b)).expect("the parent reads on");
    }
}

/// Answers each request with its double.
#[parallel]
fn doubler(ch: Channel<Reply<u64>, Request<u64>>) {
    ch.serve(|n| n * 2).expect("serves");
}

/// Sends `0..n`, an error in place of every hundredth value.
#[parallel]
fn count_with_errors(ch: Channel<u64>, n: u64) {
    for i in 0..n {
        if i % 100 == 99 {
            ch.send_error(format_args!("no {i}"))
                .expect("the parent reads on");
        } else {
            ch.send(&i).expect("the parent reads on");
        }
    }
}

/// Sends `(thread, i)` for `i` in `0..n` from each of `threads` threads
/// at once.
#[parallel]
fn count_from_threads(ch: Channel<(u64, u64)>, threads: u64, n: u64) {
    std::thread::scope(|s| {
        for t in 0..threads {
            let ch = &ch;
            s.spawn(move || {
                for i in 0..n {
                    ch.send(&(t, i)).expect("the parent reads on");
                }
            });
        }
    });
}

/// The value or error expected at `i` from `count_with_errors`.
fn expect_at(i: u64, got: pproc::Result<u64>) {
    match got {
        Ok(v) => assert_eq!(v, i),
        Err(Error::Remote { message }) => {
            assert_eq!(i % 100, 99, "an error at {i}");
            assert_eq!(message, format!("no {i}"));
        }
        Err(err) => panic!("at {i}: {err}"),
    }
}

#[test]
fn every_way_of_receiving_takes_the_next_value_in_turn() {
    let n = 100_000;
    let h = count_with_errors::start(n).unwrap();
    let mut i = 0;
    // Values read ahead for the iterator are the next ones for every other
    // receive too, and errors keep their place among them.
    for got in h.iter() {
        expect_at(i, got);
        i += 1;
        match i % 7 {
            1 if i < n => {
                expect_at(i, h.recv());
                i += 1;
            }
            3 if i < n => {
                expect_at(i, h.recv_timeout(Duration::from_secs(60)));
                i += 1;
            }
            5 if i < n => {
                match h.try_recv() {
                    Ok(Some(v)) => {
                        expect_at(i, Ok(v));
                        i += 1;
                    }
                    Ok(None) => {}
                    Err(err) => {
                        expect_at(i, Err(err));
                        i += 1;
                    }
                }
                h.is_finished().unwrap();
            }
            _ => {}
        }
    }
    assert_eq!(i, n);
    h.join().unwrap();
}

#[test]
fn a_join_after_some_values_keeps_the_rest_for_later() {
    let n = 20_000;
    let mut h = count_with_errors::start(n).unwrap();
    for i in 0..10 {
        expect_at(i, h.recv());
    }
    // The wait for the result keeps every value it passes, in order.
    while let Err(err) = h.join_timeout(Duration::from_millis(1)) {
        assert!(err.is_timeout(), "{err}");
    }
    let mut i = 10;
    for got in h.iter() {
        expect_at(i, got);
        i += 1;
    }
    assert_eq!(i, n);
}

#[test]
fn values_sent_from_several_threads_all_arrive_each_in_order() {
    let (threads, n) = (3, 50_000);
    let h = count_from_threads::start(threads, n).unwrap();
    let mut next = vec![0; 3];
    for got in h.iter() {
        let (t, i) = got.unwrap();
        assert_eq!(i, next[usize::try_from(t).unwrap()], "thread {t}");
        next[usize::try_from(t).unwrap()] += 1;
    }
    assert_eq!(next, [n; 3]);
    h.join().unwrap();
}

#[test]
fn small_values_around_large_ones_arrive_whole_and_in_order() {
    // Each large value arrives in parts behind a run of small ones, and
    // leaves the receive buffer larger than a run is read ahead from.
    let (rounds, small, big) = (4, 3_000, 300_000);
    let h = small_and_big::start(rounds, small, big).unwrap();
    for round in 0..rounds {
        for i in 0..small {
            assert_eq!(h.recv().unwrap(), [round, i]);
        }
        let got = h.recv().unwrap();
        assert_eq!(got.len(), usize::try_from(big).unwrap());
        assert!(got.iter().zip(0..).all(|(&v, i)| v == i * round));
    }
    assert!(matches!(h.recv(), Err(Error::Disconnected)));
    h.join().unwrap();
}

#[test]
fn two_hundred_thousand_values_arrive_in_order() {
    let h = count::start(200_000, false).unwrap();
    for i in 0..200_000 {
        assert_eq!(h.recv().unwrap(), i);
    }
    assert!(matches!(h.recv(), Err(Error::Disconnected)));
    h.join().unwrap();
}

#[test]
fn values_arrive_while_their_sender_sleeps() {
    // The child sleeps a minute after a burst of values: the first may go
    // out at once, the others wait for the flusher.
    let h = burst_then_sleep::start(100, 60).unwrap();
    for i in 0..100 {
        assert_eq!(h.recv_timeout(Duration::from_secs(20)).unwrap(), i);
    }
    h.kill().unwrap();
}

#[test]
fn values_flushed_before_a_kill_all_arrive() {
    let h = send_then_die::start(10_000).unwrap();
    for i in 0..10_000 {
        assert_eq!(h.recv().unwrap(), i);
    }
    assert!(matches!(h.recv(), Err(Error::Signaled { signal: 9 })));
}

#[test]
fn a_panic_comes_after_every_value_sent_before_it() {
    let h = send_then_panic::start(10_000).unwrap();
    for i in 0..10_000 {
        assert_eq!(h.recv().unwrap(), i);
    }
    assert!(matches!(h.recv(), Err(Error::Remote { message }) if message == "last words"));
    match h.recv() {
        Err(Error::Panicked { message, .. }) => assert_eq!(message, "after 10000 values"),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn the_parent_gathers_its_values_too() {
    let h = sum::start().unwrap();
    for n in 1..=100_000 {
        h.send(&n).unwrap();
    }
    // `close` writes out what waits before it shuts the channel.
    h.close();
    assert_eq!(h.join().unwrap(), 5_000_050_000);
}

#[test]
fn the_parents_values_go_out_while_it_waits_elsewhere() {
    let h = add_pairs::start().unwrap();
    // Borrowed before the sends: `as_fd` writes out what waits.
    let mut fds = [PollFd::new(h.as_fd(), PollFlags::POLLIN)];
    h.send(&5).unwrap();
    h.send(&6).unwrap();
    // No receive, no flush: the flusher writes the second value out (if
    // not the first too), and the answer makes the socket readable.
    let ready = poll(&mut fds, PollTimeout::from(20_000u16)).unwrap();
    assert_eq!(ready, 1);
    assert_eq!(h.recv().unwrap(), 11);
    // Without a bound, each value is written at once.
    h.set_flush_after(Duration::ZERO);
    h.send(&1).unwrap();
    h.send(&2).unwrap();
    let ready = poll(&mut fds, PollTimeout::from(20_000u16)).unwrap();
    assert_eq!(ready, 1);
    assert_eq!(h.recv().unwrap(), 3);
}

#[test]
fn request_and_reply_answer_at_once() {
    let h = doubler::start().unwrap();
    for n in 0..1000 {
        assert_eq!(h.call(&n).unwrap(), n * 2);
    }
    // From many threads at once.
    std::thread::scope(|s| {
        for t in 0..4 {
            let h = &h;
            s.spawn(move || {
                for n in 0..200 {
                    let n = t * 1000 + n;
                    assert_eq!(h.call(&n).unwrap(), n * 2);
                }
            });
        }
    });
}

/// bincode's standard encoding of a `u64` (a varint), as the floor writes it.
fn put_varint(out: &mut Vec<u8>, n: u64) {
    match n {
        0..=250 => out.push(u8::try_from(n).unwrap()),
        251..=0xffff => {
            out.push(251);
            out.extend_from_slice(&u16::try_from(n).unwrap().to_le_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(252);
            out.extend_from_slice(&u32::try_from(n).unwrap().to_le_bytes());
        }
        _ => {
            out.push(253);
            out.extend_from_slice(&n.to_le_bytes());
        }
    }
}

fn get_varint(bytes: &[u8]) -> u64 {
    match bytes[0] {
        251 => u16::from_le_bytes([bytes[1], bytes[2]]).into(),
        252 => u32::from_le_bytes(bytes[1..5].try_into().unwrap()).into(),
        253 => u64::from_le_bytes(bytes[1..9].try_into().unwrap()),
        small => small.into(),
    }
}

/// The floor: `n` values through a bare socketpair to this thread, each a
/// length-prefixed frame, gathered 64 KiB at a time, decoded one by one.
fn floor(n: u64) -> Duration {
    let (mut ours, mut theirs) = UnixStream::pair().unwrap();
    let start = Instant::now();
    let writer = std::thread::spawn(move || {
        let mut buf = Vec::with_capacity(128 * 1024);
        for i in 0..n {
            let at = buf.len();
            buf.extend_from_slice(&[0; 4]);
            put_varint(&mut buf, i);
            let len = u32::try_from(buf.len() - at - 4).unwrap();
            buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
            if buf.len() >= 64 * 1024 {
                theirs.write_all(&buf).unwrap();
                buf.clear();
            }
        }
        theirs.write_all(&buf).unwrap();
    });
    let mut buf = vec![0; 64 * 1024];
    let (mut have, mut seen) = (0, 0);
    loop {
        let got = ours.read(&mut buf[have..]).unwrap();
        if got == 0 {
            break;
        }
        have += got;
        let mut at = 0;
        let full = &buf[..have];
        while let Some(head) = full.get(at..at + 4) {
            let len = u32::from_le_bytes(head.try_into().unwrap()) as usize;
            let Some(body) = full.get(at + 4..at + 4 + len) else {
                break;
            };
            assert_eq!(get_varint(body), seen);
            seen += 1;
            at += 4 + len;
        }
        buf.copy_within(at..have, 0);
        have -= at;
    }
    assert_eq!(seen, n);
    writer.join().unwrap();
    start.elapsed()
}

/// The time to receive `n` values from `count`.
fn stream(n: u64, through: bool) -> Duration {
    let h = count::start(n, through).unwrap();
    // The first value is had once the child runs: time the rest.
    assert_eq!(h.recv().unwrap(), 0);
    let start = Instant::now();
    for i in 1..n {
        assert_eq!(h.recv().unwrap(), i);
    }
    let time = start.elapsed();
    h.join().unwrap();
    time
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// `cargo test --release --test streams_batched -- --ignored --nocapture`
#[test]
#[ignore = "measures; run alone, in release"]
fn measure_stream() {
    const N: u64 = 200_000;
    let rate = |time: Duration| N as f64 / time.as_secs_f64() / 1e6;
    // Taken in turns, so that both see the same load.
    let (mut floors, mut streams) = (Vec::new(), Vec::new());
    for _ in 0..9 {
        floors.push(floor(N));
        streams.push(stream(N, false));
    }
    let (floor, batched) = (median(floors), median(streams));
    let through = median((0..3).map(|_| stream(N, true)).collect());
    println!(
        "{N} u64 child to parent: floor {:.1} M/s, pproc {:.1} M/s ({:.2}x), written one by one {:.2} M/s",
        rate(floor),
        rate(batched),
        floor.as_secs_f64() / batched.as_secs_f64(),
        rate(through),
    );
    let h = doubler::start().unwrap();
    let calls = |h: &pproc::Handle<(), Request<u64>, Reply<u64>, pproc::Streams>| {
        median(
            (0..2000)
                .map(|n| {
                    let start = Instant::now();
                    assert_eq!(h.call(&n).unwrap(), n * 2);
                    start.elapsed()
                })
                .collect(),
        )
    };
    let gathered = calls(&h);
    h.set_flush_after(Duration::ZERO);
    let at_once = calls(&h);
    println!(
        "request and reply: median {:.1} us (parent writing each at once: {:.1} us)",
        gathered.as_secs_f64() * 1e6,
        at_once.as_secs_f64() * 1e6
    );
}
