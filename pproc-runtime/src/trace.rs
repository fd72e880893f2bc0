//! `tracing` events and spans, behind the `tracing` feature; without it
//! each function here is empty and costs nothing.
//!
//! Every event has the target `pproc`, and names the child by its
//! `function` (its registered name) and `pid` where there is one:
//! `RUST_LOG=pproc=debug` with `tracing-subscriber`'s `EnvFilter` shows
//! them all. Levels: a child that fails, a worker replaced and a host lost
//! are `warn`; a host connected is `info`; spawns, exits, dispatches,
//! batch sizes and manager connections are `debug`.

use std::time::Duration;

use crate::error::Error;
use crate::process::child::Status;

/// A span entered until it drops; nothing without the feature.
#[cfg(feature = "tracing")]
pub(crate) type Entered = tracing::span::EnteredSpan;
#[cfg(not(feature = "tracing"))]
pub(crate) struct Entered;

/// Starting a child that runs `function`, on `host` if not here.
#[inline]
pub(crate) fn spawn_span(function: &str, host: Option<&str>) -> Entered {
    #[cfg(feature = "tracing")]
    return tracing::debug_span!(target: "pproc", "spawn", function, host).entered();
    #[cfg(not(feature = "tracing"))]
    {
        let _ = (function, host);
        Entered
    }
}

/// A child started.
#[inline]
pub(crate) fn spawned(function: &str, pid: u32, took: Duration) {
    #[cfg(feature = "tracing")]
    tracing::debug!(target: "pproc", function, pid, ?took, "child started");
    #[cfg(not(feature = "tracing"))]
    let _ = (function, pid, took);
}

/// A child ended as `status` says, `lived` after it started.
#[inline]
pub(crate) fn exited(function: &str, pid: u32, status: Status, lived: Duration) {
    #[cfg(feature = "tracing")]
    tracing::debug!(target: "pproc", function, pid, ?status, ?lived, "child exited");
    #[cfg(not(feature = "tracing"))]
    let _ = (function, pid, status, lived);
}

/// A child's call failed.
#[inline]
pub(crate) fn failed(function: &str, pid: u32, error: &Error) {
    #[cfg(feature = "tracing")]
    tracing::warn!(target: "pproc", function, pid, %error, "child failed");
    #[cfg(not(feature = "tracing"))]
    let _ = (function, pid, error);
}

/// A worker was sent `calls` calls, the first of `function`.
#[inline]
pub(crate) fn dispatched(function: &str, pid: u32, calls: usize) {
    #[cfg(feature = "tracing")]
    tracing::debug!(target: "pproc", function, pid, calls, "batch dispatched");
    #[cfg(not(feature = "tracing"))]
    let _ = (function, pid, calls);
}

/// A worker died running `function`: a new one takes its place.
#[inline]
pub(crate) fn worker_replaced(function: &str, pid: u32, error: &Error) {
    #[cfg(feature = "tracing")]
    tracing::warn!(target: "pproc", function, pid, %error, "worker died; replaced");
    #[cfg(not(feature = "tracing"))]
    let _ = (function, pid, error);
}

/// The batch size went from `was` to `now`: a batch of `calls` took
/// `took`.
#[inline]
pub(crate) fn batch_size(was: usize, now: usize, calls: usize, took: Duration) {
    #[cfg(feature = "tracing")]
    if was != now {
        tracing::debug!(target: "pproc", was, now, calls, ?took, "batch size");
    }
    #[cfg(not(feature = "tracing"))]
    let _ = (was, now, calls, took);
}

/// An agent answered on `host`.
#[inline]
pub(crate) fn agent_connected(host: &str, agent: u32, hostname: &str, took: Duration) {
    #[cfg(feature = "tracing")]
    tracing::info!(target: "pproc", host, agent, hostname, ?took, "host connected");
    #[cfg(not(feature = "tracing"))]
    let _ = (host, agent, hostname, took);
}

/// No agent answered on `host`.
#[inline]
pub(crate) fn agent_failed(host: &str, error: &Error) {
    #[cfg(feature = "tracing")]
    tracing::warn!(target: "pproc", host, %error, "host not connected");
    #[cfg(not(feature = "tracing"))]
    let _ = (host, error);
}

/// The link to `host` ended; `asked` if this process ended it.
#[inline]
pub(crate) fn link_ended(host: &str, asked: bool) {
    #[cfg(feature = "tracing")]
    if asked {
        tracing::info!(target: "pproc", host, "host disconnected");
    } else {
        tracing::warn!(target: "pproc", host, "host lost");
    }
    #[cfg(not(feature = "tracing"))]
    let _ = (host, asked);
}

/// A client connected to the manager at `address`.
#[inline]
pub(crate) fn manager_connected(address: &dyn std::fmt::Display) {
    #[cfg(feature = "tracing")]
    tracing::debug!(target: "pproc", %address, "manager connected");
    #[cfg(not(feature = "tracing"))]
    let _ = address;
}
