//! Resource limits on a child (`prlimit`) and its wall-clock deadline (the
//! [`watchdog`]).

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use super::child::{Child, Status};
use super::watchdog;
use crate::error::{Error, Limit, Result};
use crate::wire::frame::{EXIT_OUT_OF_MEMORY, EXIT_STACK_OVERFLOW};

/// The resource limits and deadline a child is started with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Limits {
    pub(crate) deadline: Option<Duration>,
    /// Address space, in bytes.
    pub(crate) memory: Option<u64>,
    /// CPU time, in whole seconds.
    pub(crate) cpu: Option<u64>,
}

/// Applies `limits` to `child`, and has the watchdog keep its deadline. On
/// failure the child is killed.
pub(crate) fn apply(child: &mut Child, limits: Limits) -> Result<()> {
    let applied = set_all(child, limits);
    if applied.is_err() {
        let _ = child.kill();
    }
    applied
}

fn set_all(child: &mut Child, limits: Limits) -> Result<()> {
    if let Some(bytes) = limits.memory {
        set(child, libc::RLIMIT_AS, bytes, bytes)?;
    }
    if let Some(seconds) = limits.cpu {
        // SIGXCPU at the limit, SIGKILL a second later.
        set(child, libc::RLIMIT_CPU, seconds, seconds + 1)?;
    }
    if let Some(after) = limits.deadline {
        let Some(pidfd) = &child.pidfd else {
            return Err(Error::Spawn(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "deadlines need pidfds (Linux 5.3 or later)",
            )));
        };
        if let Some(at) = Instant::now().checked_add(after) {
            child.ticket = Some(watchdog::watch(pidfd.as_fd(), child.pid, child.group, at)?);
        }
    }
    Ok(())
}

fn set(child: &Child, resource: libc::__rlimit_resource_t, value: u64, hard: u64) -> Result<()> {
    let limit = libc::rlimit {
        rlim_cur: value,
        rlim_max: hard,
    };
    // SAFETY: prlimit reads a valid rlimit for a process of ours; nix only
    // wraps setrlimit for the calling process.
    let rc = unsafe {
        libc::prlimit(
            child.pid.as_raw(),
            resource,
            &raw const limit,
            std::ptr::null_mut(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(Error::Spawn(std::io::Error::last_os_error()))
    }
}

/// The error for a child that ended with `status` without a result;
/// `name` is what it ran.
pub(crate) fn status_error(status: Status, expired: bool, limits: &Limits, name: &str) -> Error {
    match status {
        _ if expired => Error::Timeout,
        Status::Signaled(libc::SIGXCPU) if limits.cpu.is_some() => {
            Error::LimitExceeded(Limit::CpuTime {
                seconds: limits.cpu.unwrap_or_default(),
            })
        }
        Status::Exited(EXIT_OUT_OF_MEMORY) => match limits.memory {
            Some(bytes) => Error::LimitExceeded(Limit::Memory { bytes }),
            None => Error::OutOfMemory,
        },
        Status::Exited(EXIT_STACK_OVERFLOW) => Error::StackOverflow {
            name: name.to_owned(),
        },
        other => other.into(),
    }
}
