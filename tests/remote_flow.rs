//! Flow control on a host's link: a reader that falls behind holds back
//! its own child, and neither the parent nor the host's agent keeps more
//! than a window of what crosses for it. The launcher is `env`, so the
//! agent runs on this host and its memory can be read.

use std::time::Duration;

use pproc::{Builder, Bytes, Channel, Prefix, parallel};

/// Chunks of 16 KiB each: 128 MiB, ten times the bound the tests allow.
const CHUNKS: u64 = 8192;
const CHUNK: usize = 16 << 10;

fn chunk(i: u64) -> Bytes {
    Bytes::from(vec![(i % 251) as u8; CHUNK])
}

/// Says its agent's pid, then sends [`CHUNKS`] chunks as fast as it can.
#[parallel]
fn flood(ch: Channel<(u32, Bytes)>) {
    let agent = std::os::unix::process::parent_id();
    for i in 0..CHUNKS {
        ch.send(&(agent, chunk(i))).unwrap();
    }
}

/// Says its agent's pid, waits, then reads [`CHUNKS`] chunks.
#[parallel]
fn sink(ch: Channel<u32, Bytes>) -> u64 {
    ch.send(&std::os::unix::process::parent_id()).unwrap();
    ch.flush().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let mut sum = 0;
    for _ in 0..CHUNKS {
        let bytes = ch.recv().unwrap();
        assert_eq!(bytes.len(), CHUNK);
        sum += u64::from(bytes[0]);
    }
    sum
}

fn expected_sum() -> u64 {
    (0..CHUNKS).map(|i| i % 251).sum()
}

/// A figure of `/proc/<pid>/status`, in MiB.
fn status_mib(pid: &str, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|line| line.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in {status}"));
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap();
    kib >> 10
}

#[test]
fn a_parent_that_reads_late_holds_back_its_remote_child_not_its_memory() {
    let b = Builder::new().launcher(Prefix::new(["env"]).host("flood"));
    let h = b.start(flood::call()).unwrap();
    let (agent, first) = h.recv().unwrap();
    assert_eq!(first, chunk(0));
    let before = status_mib("self", "VmRSS:");
    // The child sends as fast as the link takes it; nothing is read here.
    std::thread::sleep(Duration::from_secs(2));
    let parent = status_mib("self", "VmRSS:") - before;
    let agent_peak = status_mib(&agent.to_string(), "VmHWM:");
    let mut sum = u64::from(first[0]);
    for _ in 1..CHUNKS {
        sum += u64::from(h.recv().unwrap().1[0]);
    }
    h.join().unwrap();
    assert_eq!(sum, expected_sum(), "every chunk arrived, in full");
    eprintln!("parent grew {parent} MiB; agent peaked at {agent_peak} MiB");
    assert!(
        parent < 48,
        "the parent grew by {parent} MiB while 128 MiB waited to be read"
    );
    assert!(
        agent_peak < 64,
        "the agent peaked at {agent_peak} MiB while 128 MiB waited to be read"
    );
}

#[test]
fn a_remote_child_that_reads_late_holds_back_its_parent_not_its_agent() {
    let b = Builder::new().launcher(Prefix::new(["env"]).host("sink"));
    let h = b.start(sink::call()).unwrap();
    let agent = h.recv().unwrap();
    for i in 0..CHUNKS {
        h.send(&chunk(i)).unwrap();
    }
    h.flush().unwrap();
    let agent_peak = status_mib(&agent.to_string(), "VmHWM:");
    assert_eq!(h.join().unwrap(), expected_sum(), "every chunk arrived");
    eprintln!("agent peaked at {agent_peak} MiB");
    assert!(
        agent_peak < 64,
        "the agent peaked at {agent_peak} MiB while 128 MiB waited to be read"
    );
}
