//! Request and reply with serving children, errors sent in place of
//! values, and receiver loops: real children on both ends.

use std::time::{Duration, Instant};

use pproc::{Channel, Error, Exchange, Failure, Reply, Request, parallel};

/// Answers with the square, or an error for 13; dies on 666.
#[parallel]
fn squarer(ch: Channel<Reply<u64>, Request<u64>>) -> u32 {
    let mut answered = 0;
    ch.try_serve(|n| {
        if n == 666 {
            // SAFETY: raise(3) with a valid signal.
            unsafe { libc::raise(libc::SIGKILL) };
        }
        answered += 1;
        if n == 13 {
            Err(format!("{n} is unlucky"))
        } else {
            Ok(n * n)
        }
    })
    .unwrap();
    answered
}

/// Holds `n` requests, then answers them last to first.
#[parallel]
fn backwards(ch: Channel<Reply<String>, Request<String>>, n: usize) {
    let mut held = Vec::new();
    for request in &ch {
        held.push(request.unwrap());
        if held.len() == n {
            for request in held.drain(..).rev() {
                let answer = request.body.to_uppercase();
                ch.send(&request.reply(answer)).unwrap();
            }
        }
    }
}

/// Sleeps `ms` before each answer.
#[parallel]
fn slow_echo(ch: Channel<Reply<u64>, Request<(u64, u64)>>) {
    ch.serve(|(value, ms)| {
        std::thread::sleep(Duration::from_millis(ms));
        value
    })
    .unwrap();
}

/// Sends 0..n, an error in place of every multiple of `every`.
#[parallel]
fn mixed(ch: Channel<u64>, n: u64, every: u64) {
    for i in 0..n {
        if i.is_multiple_of(every) {
            ch.send_error(format_args!("no {i}")).unwrap();
        } else {
            ch.send(&i).unwrap();
        }
    }
}

/// Reports what it receives, errors included, as strings.
#[parallel]
fn listener(ch: Channel<String, u64>) {
    for got in &ch {
        let line = match got {
            Ok(n) => n.to_string(),
            Err(err) => err.to_string(),
        };
        ch.send(&line).unwrap();
    }
}

/// Sends `n` values and exits at once.
#[parallel]
fn burst(ch: Channel<u32>, n: u32) {
    for i in 0..n {
        ch.send(&i).unwrap();
    }
}

#[test]
fn calls_get_their_replies_and_errors() {
    let h = squarer::start().unwrap();
    assert_eq!(h.call(&7).unwrap(), 49);
    match h.call(&13) {
        Err(Error::Remote { message }) => assert_eq!(message, "13 is unlucky"),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(h.call_timeout(&9, Duration::from_secs(60)).unwrap(), 81);
    h.close();
}

#[test]
fn replies_find_their_requests_whatever_their_order() {
    let h = backwards::start(4).unwrap();
    let words = ["one", "two", "three", "four"];
    let ids: Vec<_> = words
        .iter()
        .map(|w| h.request(&(*w).to_owned()).unwrap())
        .collect();
    for i in [2, 0, 3, 1] {
        assert_eq!(h.reply(ids[i]).unwrap(), words[i].to_uppercase());
    }
}

#[test]
fn threads_share_a_serving_child() {
    let h = squarer::start().unwrap();
    std::thread::scope(|s| {
        for t in 0..4_u64 {
            let h = &h;
            s.spawn(move || {
                for i in 0..50 {
                    let n = t * 1000 + i;
                    if n != 13 {
                        assert_eq!(h.call(&n).unwrap(), n * n);
                    }
                }
            });
        }
    });
    h.close();
    assert_eq!(h.join().unwrap(), 199, "every call but 13 answered");
}

#[test]
fn a_thread_that_reads_anothers_reply_hands_it_over() {
    // The child answers only once all four requests are in, last first:
    // whichever thread reads them takes the others' replies too.
    let h = backwards::start(4).unwrap();
    let started = Instant::now();
    let answers: Vec<String> = std::thread::scope(|s| {
        let h = &h;
        let calls: Vec<_> = ["a", "b", "c", "d"]
            .into_iter()
            .map(|w| s.spawn(move || h.call_timeout(&w.to_owned(), Duration::from_secs(120))))
            .collect();
        calls
            .into_iter()
            .map(|c| c.join().unwrap().unwrap())
            .collect()
    });
    assert_eq!(answers, ["A", "B", "C", "D"]);
    // Each was handed its reply, rather than left waiting for its timeout.
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[test]
fn a_child_that_dies_mid_call_fails_the_call_at_once() {
    let h = squarer::start().unwrap();
    let started = Instant::now();
    let got = h.call_timeout(&666, Duration::from_secs(120));
    assert!(matches!(got, Err(Error::Signaled { signal: 9 })), "{got:?}");
    // Not after the timeout: as soon as the child died.
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[test]
fn a_late_reply_is_dropped_and_the_next_call_gets_its_own() {
    let h = slow_echo::start().unwrap();
    assert!(matches!(
        h.call_timeout(&(1, 300), Duration::from_millis(20)),
        Err(Error::Timeout)
    ));
    assert_eq!(h.call(&(2, 0)).unwrap(), 2, "not the late reply to 1");
    // A request kept in flight can be asked for again after a timeout.
    let id = h.request(&(3, 300)).unwrap();
    assert!(matches!(
        h.reply_timeout(id, Duration::from_millis(20)),
        Err(Error::Timeout)
    ));
    assert_eq!(h.reply(id).unwrap(), 3);
}

#[test]
fn errors_sent_in_place_of_values_reach_recv_and_the_stream_goes_on() {
    let h = mixed::start(7, 3).unwrap();
    let got: Vec<Result<u64, String>> = h.iter().map(|r| r.map_err(|e| e.to_string())).collect();
    assert_eq!(
        got,
        [
            Err("the other end sent an error: no 0".to_owned()),
            Ok(1),
            Ok(2),
            Err("the other end sent an error: no 3".to_owned()),
            Ok(4),
            Ok(5),
            Err("the other end sent an error: no 6".to_owned()),
        ]
    );
    h.join().unwrap();
}

#[test]
fn the_parent_can_send_errors_too() {
    let h = listener::start().unwrap();
    h.send(&1).unwrap();
    h.send_error("stop that").unwrap();
    h.send(&2).unwrap();
    let lines: Vec<String> = (0..3).map(|_| h.recv().unwrap()).collect();
    assert_eq!(lines, ["1", "the other end sent an error: stop that", "2"]);
}

#[test]
fn an_exchange_stores_sent_errors_as_failures() {
    #[derive(Default, pproc::Exchange)]
    struct Mixed {
        #[store]
        values: Vec<u64>,
        #[store(errors)]
        failures: Vec<Failure>,
    }
    let mut ex = Exchange::new(Mixed::default()).continuous(true);
    ex.start(mixed::call(10, 5)).unwrap();
    let mixed = ex.finish().unwrap();
    assert_eq!(mixed.values, [1, 2, 3, 4, 6, 7, 8, 9]);
    let messages: Vec<String> = mixed.failures.iter().map(|f| f.error.to_string()).collect();
    assert_eq!(
        messages,
        [
            "the other end sent an error: no 0",
            "the other end sent an error: no 5"
        ]
    );
}

#[test]
fn a_receiver_loop_gets_everything_sent_before_the_child_exited() {
    let h = burst::start(100).unwrap();
    // Let it send everything and exit before anyone reads.
    while !h.is_finished().unwrap() {
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut got = Vec::new();
    h.for_each(|v| got.push(v.unwrap())).unwrap();
    assert_eq!(got, (0..100).collect::<Vec<_>>());
}

#[test]
fn a_receiver_loop_reports_how_the_child_died() {
    let h = squarer::start().unwrap();
    let id = h.request(&666).unwrap();
    let mut replies = 0;
    let end = h.for_each(|_| replies += 1);
    assert!(matches!(end, Err(Error::Signaled { signal: 9 })), "{end:?}");
    assert_eq!(replies, 0);
    assert!(matches!(h.reply(id), Err(Error::Signaled { signal: 9 })));
}
