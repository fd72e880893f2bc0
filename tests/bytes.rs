//! Byte payloads through a real child: `Bytes` and `Vec<u8>` of every size
//! arrive whole, and (ignored, for measuring) a large echo runs near the
//! speed of the socket with a bounded peak memory.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use pproc::{Bytes, Channel, parallel};

/// Sends back every block it gets; returns its peak memory, in KiB.
#[parallel]
fn echo(ch: Channel<Bytes, Bytes>) -> (u64, u64) {
    let before = status_kib("VmRSS");
    while let Ok(block) = ch.recv() {
        if ch.send(&block).is_err() {
            break;
        }
    }
    (before, status_kib("VmHWM"))
}

/// Sends back every vector it gets.
#[parallel]
fn echo_vec(ch: Channel<(Vec<u8>, String), (Vec<u8>, String)>) {
    while let Ok(value) = ch.recv() {
        ch.send(&value).expect("the parent reads on");
    }
}

/// A field of this process's `/proc/self/status`, in KiB.
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| u8::try_from((i * 31 + usize::from(seed)) % 251).unwrap())
        .collect()
}

#[test]
fn byte_blocks_of_every_size_come_back_whole() {
    let h = echo::start().unwrap();
    let sizes = [0, 1, 1000, 64 * 1024 - 1, 64 * 1024, 64 * 1024 + 1, 5 << 20];
    for (i, &len) in sizes.iter().enumerate() {
        let block = Bytes::from(pattern(len, u8::try_from(i).unwrap()));
        h.send(&block).unwrap();
        assert_eq!(h.recv().unwrap(), block, "{len} bytes");
    }
    // Several in flight at once, both ways.
    let blocks: Vec<Bytes> = (0..8).map(|i| pattern(300_000, i).into()).collect();
    for block in &blocks {
        h.send(block).unwrap();
    }
    for block in &blocks {
        assert_eq!(&h.recv().unwrap(), block);
    }
    h.close();
    h.join().unwrap();
}

#[test]
fn plain_vectors_and_long_strings_come_back_whole() {
    let h = echo_vec::start().unwrap();
    for len in [0, 10, 200_000] {
        let text: String = "pproc ".repeat(len / 6 + 1);
        let value = (pattern(len, 3), text);
        h.send(&value).unwrap();
        assert_eq!(h.recv().unwrap(), value);
    }
    h.close();
    h.join().unwrap();
}

/// The median of `runs` timings of `f`.
fn median(runs: usize, mut f: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort();
    times[runs / 2]
}

/// Echoes `len` bytes through a bare socketpair to a thread: the floor.
fn raw_echo(len: usize, runs: usize) -> Duration {
    let (mut ours, mut theirs) = UnixStream::pair().unwrap();
    let echo = std::thread::spawn(move || {
        let mut buf = vec![0; len];
        for _ in 0..runs {
            theirs.read_exact(&mut buf).unwrap();
            theirs.write_all(&buf).unwrap();
        }
    });
    let out = &vec![7; len][..];
    let mut back = vec![0; len];
    let time = median(runs, || {
        // A writer thread of our own, so that neither side waits for room
        // with a full socket in the other direction.
        std::thread::scope(|s| {
            let mut writer = ours.try_clone().unwrap();
            s.spawn(move || writer.write_all(out).unwrap());
            ours.read_exact(&mut back).unwrap();
        });
    });
    echo.join().unwrap();
    time
}

fn rate(len: usize, time: Duration) -> f64 {
    // Bytes there and back, per second.
    2.0 * f64::from(u32::try_from(len).unwrap()) / time.as_secs_f64() / 1e9
}

/// `cargo test --release --test bytes -- --ignored --nocapture`
#[test]
#[ignore = "measures; run alone, in release"]
fn measure_echo() {
    for (len, runs) in [(1 << 20, 200), (64 << 20, 9)] {
        // Reset this process's peak, to see what the payload and its echo
        // take.
        std::fs::write("/proc/self/clear_refs", "5").unwrap();
        let before = status_kib("VmRSS");
        let block = Bytes::from(pattern(len, 1));
        let h = echo::start().unwrap();
        let bytes = median(runs, || {
            h.send(&block).unwrap();
            assert_eq!(h.recv().unwrap().len(), len);
        });
        let parent_peak = status_kib("VmHWM");
        h.close();
        let (child_before, child_peak) = h.join().unwrap();
        let h = echo_vec::start().unwrap();
        let value = (block.to_vec(), String::new());
        let vec_runs = if len > 1 << 20 { 3 } else { runs / 10 };
        let vec = median(vec_runs, || {
            h.send(&value).unwrap();
            assert_eq!(h.recv().unwrap().0.len(), len);
        });
        drop(h);
        let raw = raw_echo(len, runs);
        let mib = len >> 20;
        println!(
            "{mib} MiB echo: raw socketpair {:.2} GB/s, Bytes {:.2} GB/s ({:.2}x), Vec<u8> {:.2} GB/s",
            rate(len, raw),
            rate(len, bytes),
            raw.as_secs_f64() / bytes.as_secs_f64(),
            rate(len, vec),
        );
        println!(
            "{mib} MiB echo: peak RSS over the start (payload included): parent {} KiB ({:.2}x the payload), child {} KiB ({:.2}x)",
            parent_peak - before,
            (parent_peak - before) as f64 / (len >> 10) as f64,
            child_peak - child_before,
            (child_peak - child_before) as f64 / (len >> 10) as f64,
        );
    }
}

/// A value with long runs among short fields, as users write them.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Mixed {
    id: u64,
    blob: serde_bytes::ByteBuf,
    name: String,
    more: serde_bytes::ByteBuf,
    tail: Vec<u32>,
}

/// Sends back every value it gets; returns how many, and its peak memory
/// over what it held at the start, in KiB.
#[parallel]
fn echo_mixed(ch: Channel<Mixed, Mixed>) -> (usize, u64) {
    let before = status_kib("VmRSS");
    let mut n = 0;
    loop {
        match ch.recv() {
            Ok(value) => ch.send(&value).expect("the parent reads on"),
            Err(pproc::Error::Disconnected) => break,
            Err(err) => panic!("value {n}: {err}"),
        }
        n += 1;
    }
    (n, status_kib("VmHWM") - before)
}

#[test]
fn long_runs_read_in_place_come_back_whole_among_other_fields() {
    let mib = 1 << 20;
    let sizes = [
        (0, 0, 0),
        (mib - 1, 10, mib + 1),
        (mib, mib + 3, 0),
        (mib + 1, 0, 3 * mib),
        (9 * mib + 7, 2 * mib, 5 * mib),
    ];
    let values: Vec<Mixed> = sizes
        .iter()
        .enumerate()
        .map(|(i, &(blob, name, more))| Mixed {
            id: i as u64,
            blob: pattern(blob, 1).into(),
            name: "né ".repeat(name / 4 + usize::from(name > 0)),
            more: pattern(more, 2).into(),
            tail: (0..u32::try_from(i).unwrap() * 1000).collect(),
        })
        .collect();
    let h = echo_mixed::start().unwrap();
    // One at a time, then all in flight at once.
    for value in &values {
        h.send(value).unwrap();
        assert_eq!(&h.recv().unwrap(), value, "value {}", value.id);
    }
    for value in &values {
        h.send(value).unwrap();
    }
    for value in &values {
        assert_eq!(&h.recv().unwrap(), value, "value {} in flight", value.id);
    }
    h.close();
    assert_eq!(h.join().unwrap().0, 2 * values.len());
}

#[test]
fn a_large_byte_buffer_is_read_into_the_vector_it_arrives_in() {
    // Read through a receive buffer and copied out, 64 MiB would take
    // 128 MiB on each side, the buffer and the value.
    let len = 64 << 20;
    let value = Mixed {
        id: 1,
        blob: pattern(len, 5).into(),
        name: String::new(),
        more: Vec::new().into(),
        tail: vec![7],
    };
    let h = echo_mixed::start().unwrap();
    // A first value, so that the child is receiving when the large ones
    // arrive: bytes that come while it starts are read as they come.
    let small = Mixed {
        blob: Vec::new().into(),
        ..value.clone()
    };
    h.send(&small).unwrap();
    assert_eq!(h.recv().unwrap(), small);
    for _ in 0..2 {
        h.send(&value).unwrap();
        assert!(h.recv().unwrap() == value);
    }
    h.close();
    let (n, peak) = h.join().unwrap();
    assert_eq!(n, 3);
    let payload = u64::try_from(len >> 10).unwrap();
    assert!(
        peak < payload * 3 / 2,
        "the child peaked {peak} KiB over its start for a payload of {payload} KiB"
    );
}
