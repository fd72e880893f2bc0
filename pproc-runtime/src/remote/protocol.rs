//! What a parent and a host's agent say to each other over the link: the
//! agent's preamble and hello, then frames of pproc's framing with tags of
//! their own. A child's frames travel whole inside `FRAME` frames, named
//! by the child's number on the link.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::process::child::Status;
use crate::wire::codec::decode;

/// What the agent writes first, so that a parent can skip whatever a
/// remote shell printed before it (a login message, say).
pub(crate) const MAGIC: &[u8] = b"\0pproc-agent\0";

/// The most bytes a parent skips looking for [`MAGIC`].
pub(crate) const MAX_SKIPPED: usize = 64 * 1024;

/// The version of this protocol: an agent of another answers nothing else.
pub(crate) const VERSION: u32 = 2;

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
    /// Either way: this end wrote that many bytes of a child's frames to
    /// the child's socket (or dropped them, its reader gone), so the other
    /// end may send that many more ([`WINDOW`](super::WINDOW)). The body
    /// is the child's number (`u32`) and the count (`u64`).
    pub(crate) const CREDIT: u8 = 40;
    /// Agent to parent: a child on the host opened a connection to a
    /// manager the parent reaches (see [`tunnel`](crate::remote::tunnel)).
    /// The body is the connection's number (`u32`) and the manager's
    /// address.
    pub(crate) const OPEN: u8 = 41;
    /// Either way: bytes of a tunnelled connection. The body is its number
    /// (`u32`), then the bytes.
    pub(crate) const BYTES: u8 = 42;
    /// Either way: this end of a tunnelled connection has no more to send
    /// (its socket's end closed, or it could not connect). The body is its
    /// number (`u32`).
    pub(crate) const SHUT: u8 = 43;
}

/// The most bytes of one child's frames, one way, that an end sends over
/// the link before the other end says it wrote them to the child's
/// socket: a reader that falls behind holds back its own child alone, and
/// neither end keeps more than this (and one frame) for it.
pub(crate) const WINDOW: usize = 2 << 20;

/// The body of a `CREDIT` frame.
pub(crate) fn credit_body(id: u32, bytes: u64) -> [u8; 12] {
    let mut body = [0; 12];
    body[..4].copy_from_slice(&id.to_le_bytes());
    body[4..].copy_from_slice(&bytes.to_le_bytes());
    body
}

/// A `CREDIT` frame's child and count; `None` if it is not 12 bytes.
pub(crate) fn split_credit(body: &[u8]) -> Option<(u32, u64)> {
    let (id, bytes) = <&[u8; 12]>::try_from(body).ok()?.split_at(4);
    Some((
        u32::from_le_bytes(id.try_into().ok()?),
        u64::from_le_bytes(bytes.try_into().ok()?),
    ))
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
    /// The program to run it from on the host (its path's bytes), if not
    /// the agent's own.
    pub(crate) program: Option<Vec<u8>>,
    /// Whether its standard output and error cross the link, as the
    /// streams [`output_ids`] names.
    pub(crate) capture: bool,
}

/// Tunnels (see [`tunnel`](crate::remote::tunnel)) are numbered with
/// this bit set, children without it: a `CREDIT` names one or the other.
pub(crate) const TUNNEL: u32 = 1 << 31;

/// Streams of a child's captured output are numbered with this bit set
/// (and [`TUNNEL`] clear).
const OUTPUT: u32 = 1 << 30;

/// The streams that carry child `id`'s standard output and error, as
/// `BYTES` then `SHUT`, when it is captured.
pub(crate) fn output_ids(id: u32) -> [u32; 2] {
    let base = OUTPUT | (id.wrapping_mul(2) & !(OUTPUT | TUNNEL));
    [base, base | 1]
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

/// The agent's first frame, `None` if it is not a hello.
pub(crate) fn hello(frame_tag: u8, body: &[u8]) -> Option<crate::error::Result<Hello>> {
    (frame_tag == tag::HELLO).then(|| decode::<Hello>(body))
}

/// One frame of the link, decoded: what either end may hear.
#[derive(Debug)]
pub(crate) enum Message<'a> {
    Spawn(Spawn),
    Started(Started),
    Frame {
        id: u32,
        tag: u8,
        payload: &'a [u8],
    },
    Signal(Signal),
    Close(u32),
    Exited(Exited),
    Heartbeat,
    Credit {
        id: u32,
        bytes: u64,
    },
    /// The address as the client said it, encoded by the manager.
    Open {
        id: u32,
        address: &'a [u8],
    },
    Bytes {
        id: u32,
        data: &'a [u8],
    },
    Shut(u32),
}

impl<'a> Message<'a> {
    /// The frame of `frame_tag` and `body`; `None` if it is none of the
    /// link's, or its body is not what its tag says. A hello comes once,
    /// first, and is read apart ([`hello`]).
    pub(crate) fn parse(frame_tag: u8, body: &'a [u8]) -> Option<Self> {
        Some(match frame_tag {
            tag::SPAWN => Self::Spawn(decode(body).ok()?),
            tag::STARTED => Self::Started(decode(body).ok()?),
            tag::FRAME => {
                let (id, tag, payload) = split_frame(body)?;
                Self::Frame { id, tag, payload }
            }
            tag::SIGNAL => Self::Signal(decode(body).ok()?),
            tag::CLOSE => Self::Close(u32::from_le_bytes(body.try_into().ok()?)),
            tag::EXITED => Self::Exited(decode(body).ok()?),
            tag::HEARTBEAT if body.is_empty() => Self::Heartbeat,
            tag::CREDIT => {
                let (id, bytes) = split_credit(body)?;
                Self::Credit { id, bytes }
            }
            tag::OPEN => {
                let (id, address) = split_id(body)?;
                Self::Open { id, address }
            }
            tag::BYTES => {
                let (id, data) = split_id(body)?;
                Self::Bytes { id, data }
            }
            tag::SHUT => Self::Shut(u32::from_le_bytes(body.try_into().ok()?)),
            _ => return None,
        })
    }
}

/// A body's leading number, and what follows it.
fn split_id(body: &[u8]) -> Option<(u32, &[u8])> {
    let (id, rest) = body.split_first_chunk::<4>()?;
    Some((u32::from_le_bytes(*id), rest))
}
