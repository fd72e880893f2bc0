//! pproc's `tracing` events (feature `tracing`), caught by a subscriber
//! that keeps what it prints: each names the child by `function` and
//! `pid`, and says what happened to it.

use std::io::Write;
use std::sync::{Arc, Mutex};

use pproc::{Builder, Map, Prefix, parallel};
use tracing_subscriber::filter::LevelFilter;

#[parallel]
fn square(x: u64) -> u64 {
    x * x
}

#[parallel]
fn fails() -> u8 {
    panic!("on purpose");
}

/// Dies on 3.
#[parallel]
fn fragile(x: u64) -> u64 {
    if x == 3 {
        std::process::abort();
    }
    x
}

/// What the subscriber printed.
#[derive(Clone, Default)]
struct Kept(Arc<Mutex<Vec<u8>>>);

impl Write for Kept {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Kept {
    /// The lines printed since the last call.
    fn take(&self) -> Vec<String> {
        let bytes = std::mem::take(&mut *self.0.lock().unwrap());
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// Whether one of `lines` says `what` with every one of `fields`.
fn said(lines: &[String], what: &str, fields: &[&str]) -> bool {
    lines
        .iter()
        .any(|line| line.contains(what) && fields.iter().all(|field| line.contains(field)))
}

#[test]
fn spawns_exits_failures_workers_and_hosts_are_traced() {
    let kept = Kept::default();
    let writer = kept.clone();
    tracing_subscriber::fmt()
        .with_max_level(LevelFilter::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .try_init()
        .unwrap();

    let h = square::start(5).unwrap();
    let pid = h.pid().to_string();
    assert_eq!(h.join().unwrap(), 25);
    let lines = kept.take();
    let name = format!("function=\"{}\"", square::NAME);
    let pid_field = format!("pid={pid}");
    assert!(
        said(&lines, "child started", &[&name, &pid_field]),
        "{lines:#?}"
    );
    assert!(
        said(&lines, "child exited", &[&name, &pid_field, "Exited(0)"]),
        "{lines:#?}"
    );

    assert!(fails::start().unwrap().join().is_err());
    let lines = kept.take();
    assert!(
        said(&lines, "child failed", &["WARN", "on purpose"]),
        "{lines:#?}"
    );

    let results: Vec<_> = Map::new(fragile::call, 0..8).limit(1).collect();
    assert_eq!(results.iter().filter(|r| r.is_err()).count(), 1);
    let lines = kept.take();
    let fragile_name = format!("function=\"{}\"", fragile::NAME);
    assert!(
        said(&lines, "batch dispatched", &[&fragile_name]),
        "{lines:#?}"
    );
    assert!(
        said(&lines, "worker died; replaced", &["WARN", &fragile_name]),
        "{lines:#?}"
    );

    let launcher = Prefix::new(["env"]).host("traced");
    let b = Builder::new().launcher(launcher.clone());
    assert_eq!(b.start(square::call(2)).unwrap().join().unwrap(), 4);
    let lines = kept.take();
    assert!(
        said(&lines, "host connected", &["INFO", "host=\"traced\""]),
        "{lines:#?}"
    );
    assert!(
        said(&lines, "child started", &["host=\"traced\""]),
        "{lines:#?}"
    );

    let manager = pproc::Manager::start().unwrap();
    manager.value(&1_u8).unwrap();
    assert!(said(&kept.take(), "manager connected", &[]));
}
