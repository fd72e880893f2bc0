//! Shared pieces of pproc's integration tests, examples and benchmarks.
//!
//! This crate is not published. Its unit tests prove that `#[parallel]`
//! functions work inside a library crate's own test binary.

use std::time::{Duration, Instant};

use pproc::{Channel, Error, Origin, Store, parallel};

pub mod grid;
pub mod pygmy;
pub mod testbed;

/// Doubles `x` in a child process.
#[parallel]
pub fn double(x: u64) -> u64 {
    x * 2
}

/// Sleeps for ten minutes: a grandchild that only ends when killed.
#[parallel]
pub fn slumber() -> u8 {
    std::thread::sleep(Duration::from_secs(600));
    0
}

/// A small process tree: starts `sleep 600` with `std::process::Command`
/// and a pproc grandchild ([`slumber`](fn@slumber)), sends their pids, then waits for
/// ever. With `ignore_term` it ignores `SIGTERM` first, and so does its
/// `sleep` (the disposition is inherited across exec).
///
/// # Panics
///
/// If a grandchild cannot start or the parent is gone.
#[parallel]
pub fn nest(ch: Channel<Vec<u32>>, ignore_term: bool) {
    if ignore_term {
        // SAFETY: setting a signal to SIG_IGN installs no handler code.
        unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
    }
    #[expect(
        clippy::zombie_processes,
        reason = "the sleeper outlives this function, which never returns"
    )]
    let sleeper = std::process::Command::new("sleep")
        .arg("600")
        .spawn()
        .expect("sleep starts");
    let grandchild = slumber::start().expect("a grandchild starts");
    ch.send(&vec![sleeper.id(), grandchild.pid()])
        .expect("the parent listens");
    loop {
        std::thread::park();
    }
}

/// A store that fails the test if more children of this process than
/// `limit` ever live while a value arrives, and keeps the most it saw.
#[derive(Debug)]
pub struct Bounded {
    limit: usize,
    /// The most children seen at once.
    pub most: usize,
    /// How many values were stored.
    pub count: usize,
}

impl Bounded {
    /// A store that allows `limit` children at once.
    #[must_use]
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            most: 0,
            count: 0,
        }
    }
}

impl Store<u64> for Bounded {
    fn store(&mut self, _value: u64, _origin: &Origin<'_>) -> pproc::Result<()> {
        let live = children().len();
        assert!(
            live <= self.limit,
            "{live} children live, the limit is {}",
            self.limit
        );
        self.most = self.most.max(live);
        self.count += 1;
        Ok(())
    }
}

/// A store that keeps every value with its call's index, and takes each
/// failure (with its index) instead of stopping the exchange.
#[derive(Debug)]
pub struct Tolerant<T> {
    /// The values, with the index of the call that delivered each.
    pub values: Vec<(usize, T)>,
    /// The failures, with the index of the call that failed.
    pub failures: Vec<(usize, Error)>,
}

impl<T> Default for Tolerant<T> {
    fn default() -> Self {
        Self {
            values: Vec::new(),
            failures: Vec::new(),
        }
    }
}

impl<T> Store<T> for Tolerant<T> {
    fn store(&mut self, value: T, origin: &Origin<'_>) -> pproc::Result<()> {
        self.values.push((origin.index(), value));
        Ok(())
    }

    fn failed(&mut self, error: Error, origin: &Origin<'_>) -> pproc::Result<()> {
        self.failures.push((origin.index(), error));
        Ok(())
    }
}

/// The system's monotonic clock in nanoseconds: comparable between the
/// processes of one machine, unlike `Instant`, which cannot cross them.
#[must_use]
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes a timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or_default() * 1_000_000_000
        + u64::try_from(ts.tv_nsec).unwrap_or_default()
}

/// Waits until process `pid` is gone or a zombie (dead: only its parent can
/// reap it), at most 30 seconds.
///
/// # Panics
///
/// If it is still alive after that.
pub fn wait_gone(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !matches!(process_state(pid), None | Some('Z' | 'X')) {
        assert!(Instant::now() < deadline, "process {pid} is still alive");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Starts a benchmark's report: whether a quick run was asked for
/// (`-- --quick`, or `PPROC_BENCH_QUICK` set), then the machine, the
/// profile and the command that reproduces it. Returns the machine's cores
/// and whether the run is quick.
#[must_use]
pub fn bench_preamble(bench: &str) -> (usize, bool) {
    let quick =
        std::env::args().any(|a| a == "--quick") || std::env::var_os("PPROC_BENCH_QUICK").is_some();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    println!("machine: {cores} cores; profile: {profile}");
    let flag = if quick { " -- --quick" } else { "" };
    println!("command: cargo bench --bench {bench}{flag}");
    println!();
    (cores, quick)
}

/// The trimmed stdout of a command run in the workspace, if it ran, succeeded
/// and printed something: the commit, the compiler, in a benchmark's report.
#[must_use]
pub fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(program)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !text.is_empty()).then_some(text)
}

/// Holds this test binary's one lock for tests that count its children or
/// descriptors, which tests running beside them would change.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The descriptors this process has open, each as its number and what it
/// names: compare two with [`Fds::opened_since`].
///
/// # Panics
///
/// If `/proc/self/fd` cannot be read.
#[must_use]
pub fn open_fds() -> Fds {
    let dir = std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd is readable");
    // The directory's own descriptor is in the listing: it names the
    // listing itself.
    let own = format!("/proc/{}/fd", std::process::id());
    Fds(dir
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let target = std::fs::read_link(entry.path()).ok()?;
            let target = target.display().to_string();
            (target != own).then(|| format!("{} -> {target}", entry.file_name().display()))
        })
        .collect())
}

/// A snapshot of the open descriptors (see [`open_fds`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fds(std::collections::BTreeSet<String>);

impl Fds {
    /// The descriptors open now that were not open at this snapshot,
    /// looked at again for up to a second while there are any (a thread
    /// of the test's own may be closing one). Empty when nothing leaked.
    /// A descriptor closed since the snapshot (one of another test's,
    /// say) is no leak.
    #[must_use]
    pub fn opened_since(&self) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            let new: Vec<String> = open_fds().0.difference(&self.0).cloned().collect();
            if new.is_empty() || Instant::now() >= deadline {
                return new;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The state letter of process `pid` (`R`, `S`, `Z`, ...), or `None` once it
/// is gone.
#[must_use]
pub fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: the state follows
    // the last `)`.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// The pids of this process's children, from `/proc/*/stat`.
#[must_use]
pub fn children() -> Vec<u32> {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| parent_of(*pid) == Some(me))
        .collect()
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[parallel]
    fn triple(x: u64) -> u64 {
        x * 3
    }

    #[test]
    fn unit_tests_in_a_library_start_children() {
        let _serial = serial();
        let h = triple::start(14).unwrap();
        assert_ne!(h.pid(), std::process::id());
        assert_eq!(h.join().unwrap(), 42);
        assert_eq!(double::start(21).unwrap().join().unwrap(), 42);
        assert_eq!(triple::NAME, "pproc_workspace::tests::triple");
    }

    #[test]
    fn process_state_reads_this_process() {
        assert!(matches!(process_state(std::process::id()), Some('R' | 'S')));
        assert_eq!(process_state(u32::MAX), None);
    }

    #[test]
    fn a_new_descriptor_is_a_leak_and_a_closed_one_is_not() {
        let _serial = serial();
        let (held, _) = std::io::pipe().unwrap();
        let fds = open_fds();
        let (leaked, _) = std::io::pipe().unwrap();
        drop(held);
        let new = fds.opened_since();
        assert_eq!(new.len(), 1, "{new:?}");
        assert!(new[0].contains("pipe:"), "{new:?}");
        drop(leaked);
        assert_eq!(fds.opened_since(), Vec::<String>::new());
    }
}

/// The examples in README.md, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
