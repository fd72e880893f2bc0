//! Shared pieces of pproc's integration tests, examples and benchmarks.
//!
//! This crate is not published. Its unit tests prove that `#[parallel]`
//! functions work inside a library crate's own test binary.

use pproc::parallel;

pub mod grid;
pub mod pygmy;

/// Doubles `x` in a child process.
#[parallel]
pub fn double(x: u64) -> u64 {
    x * 2
}

/// The number of descriptors this process has open.
///
/// # Panics
///
/// If `/proc/self/fd` cannot be read.
#[must_use]
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd is readable")
        .count()
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
}

/// The examples in README.md, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
