//! What a parent and a host's agent say to each other over the link: the
//! agent's preamble and hello, then frames of pproc's framing with tags of
//! their own. A child's frames travel whole inside `FRAME` frames, named
//! by the child's number on the link.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::process::child::Status;

/// What the agent writes first, so that a parent can skip whatever a
/// remote shell printed before it (a login message, say).
pub(crate) const MAGIC: &[u8] = b"\0pproc-agent\0";

/// The most bytes a parent skips looking for [`MAGIC`].
pub(crate) const MAX_SKIPPED: usize = 64 * 1024;

/// The version of this protocol: an agent of another answers nothing else.
pub(crate) const VERSION: u32 = 1;

/// The environment variable that makes a program an agent. Its value is
/// the host timeout in milliseconds: how long the agent goes on without
/// hearing from its parent.
pub(crate) const ENV: &str = "PPROC_AGENT";

/// Each end of a link says something at least this often: a `HEARTBEAT`
/// when it has nothing else to say.
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(1);

/// The link's frame tags (apart from the children's, which `FRAME` holds).
pub(crate) mod tag {
    /// Agent to parent, first: [`Hello`](super::Hello).
    pub(crate) const HELLO: u8 = 32;
    /// Parent to agent: start a child ([`Spawn`](super::Spawn)).
    pub(crate) const SPAWN: u8 = 33;
    /// Agent to parent: how starting it went ([`Started`](super::Started)).
    pub(crate) const STARTED: u8 = 34;
    /// Either way: one frame of a child. The body is the child's number
    /// (`u32`), then the frame's tag and payload.
    pub(crate) const FRAME: u8 = 35;
    /// Parent to agent: signal a child ([`Signal`](super::Signal)).
    pub(crate) const SIGNAL: u8 = 36;
    /// Parent to agent: the parent's end of a child's channel closed. The
    /// body is the child's number (`u32`).
    pub(crate) const CLOSE: u8 = 37;
    /// Agent to parent: a child ended, after its last frame
    /// ([`Exited`](super::Exited)).
    pub(crate) const EXITED: u8 = 38;
    /// Either way: nothing to say for a [`HEARTBEAT`](super::HEARTBEAT).
    /// The body is empty.
    pub(crate) const HEARTBEAT: u8 = 39;
}

/// Who the agent is.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Hello {
    pub(crate) version: u32,
    /// Its build (see `registry::fingerprint`).
    pub(crate) fingerprint: u64,
    pub(crate) hostname: String,
    pub(crate) pid: u32,
    pub(crate) cpus: u32,
}

/// Start child `id` running `name` in the role `mode` (a
/// [`Mode`](crate::wire::spec::Mode) letter).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Spawn {
    pub(crate) id: u32,
    pub(crate) name: String,
    pub(crate) mode: String,
    pub(crate) group: bool,
    /// Its deadline (milliseconds from its start), address-space limit
    /// (bytes) and CPU-time limit (seconds), applied before its arguments
    /// reach it.
    pub(crate) deadline_ms: Option<u64>,
    pub(crate) memory: Option<u64>,
    pub(crate) cpu: Option<u64>,
    /// Whether a panic captures a backtrace.
    pub(crate) backtrace: bool,
}

/// Child `id` started as `pid` on the agent's host, or why not.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Started {
    pub(crate) id: u32,
    pub(crate) outcome: Result<u32, Refused>,
}

/// Why an agent did not start a child.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum Refused {
    /// No function of this name is registered in its build.
    Unregistered(String),
    /// The process could not be started.
    Spawn(String),
    /// The order made no sense (an unknown role).
    Order(String),
}

/// Send `signal` to child `id`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Signal {
    pub(crate) id: u32,
    pub(crate) signal: i32,
}

/// Child `id` ended as `status` says.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Exited {
    pub(crate) id: u32,
    pub(crate) status: Ended,
    /// Whether its deadline killed it.
    pub(crate) expired: bool,
}

/// A child's [`Status`] as the link carries it.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub(crate) enum Ended {
    Exited(i32),
    Signaled(i32),
    Unknown,
}

impl From<Status> for Ended {
    fn from(status: Status) -> Self {
        match status {
            Status::Exited(code) => Self::Exited(code),
            Status::Signaled(signal) => Self::Signaled(signal),
            Status::Unknown | Status::Lost => Self::Unknown,
        }
    }
}

impl From<Ended> for Status {
    fn from(ended: Ended) -> Self {
        match ended {
            Ended::Exited(code) => Self::Exited(code),
            Ended::Signaled(signal) => Self::Signaled(signal),
            Ended::Unknown => Self::Unknown,
        }
    }
}

/// The body of a `FRAME` frame: child `id`'s frame of `tag`, its payload
/// after it.
pub(crate) fn frame_head(id: u32, tag: u8) -> [u8; 5] {
    let [a, b, c, d] = id.to_le_bytes();
    [a, b, c, d, tag]
}

/// A `FRAME` frame's child, tag and payload; `None` if it is too short.
pub(crate) fn split_frame(body: &[u8]) -> Option<(u32, u8, &[u8])> {
    let (head, payload) = body.split_first_chunk::<5>()?;
    let [a, b, c, d, tag] = *head;
    Some((u32::from_le_bytes([a, b, c, d]), tag, payload))
}
