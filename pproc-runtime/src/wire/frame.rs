//! What the two ends of a channel say to each other: frame tags, and the
//! bodies of the frames that end a call.
//!
//! A frame is a little-endian `u32` body length followed by the body: one
//! tag byte and the payload, bincode unless a tag says otherwise (see
//! [`codec`](super::codec)). Parent to child: `ARGS`, then `DATA`. Child to
//! parent: `DATA`, then exactly one of `RESULT`, `PANIC` or `FAIL`. A
//! reusable worker gets `CALL` frames after its `ARGS`, and answers each in
//! the same way. Where a child cannot speak at all, its exit status says
//! why (the `EXIT_*` constants).

use serde::{Deserialize, Serialize};

use super::codec::{decode, header};
use crate::error::Error;

/// Frame tags.
pub(crate) mod tag {
    pub(crate) const ARGS: u8 = 1;
    pub(crate) const DATA: u8 = 2;
    pub(crate) const RESULT: u8 = 3;
    pub(crate) const PANIC: u8 = 4;
    pub(crate) const FAIL: u8 = 5;
    /// Parent to a reusable worker: run this function next. The body is
    /// the name's length (`u32`), the name, then the serialized arguments.
    pub(crate) const CALL: u8 = 6;
    /// Either way, in place of a `DATA` value: an error the sender raised
    /// (concurrence's `send_exception`). The body is its message.
    pub(crate) const ERROR: u8 = 7;
    /// Collector to background child: one frame it has handed to its user
    /// (a value, an error the call sent in its place, or the end). The body
    /// is empty.
    pub(crate) const ACK: u8 = 8;
    /// Worker to parent: its result log ([`log`](crate::wire::log)) is
    /// written up to a position; the frames there come in its place. The
    /// body is the position (`u64`) and whether the log starts again
    /// after it (`u8`).
    pub(crate) const LOG: u8 = 9;
    /// Either way, in place of a frame of another tag whose payload is in
    /// shared memory: a sealed memfd that came with this frame (see
    /// [`shm`](crate::wire::shm)). The body is that frame's tag (`u8`)
    /// and its payload's length (`u64`).
    pub(crate) const SHARED: u8 = 10;
    /// Parent to child, in place of a frame of another tag whose payload
    /// is at the start of a slab of the parent's, lent with this frame
    /// (see [`shm`](crate::wire::shm)). The body is that frame's tag
    /// (`u8`), the slab's number (`u32`) and the payload's length (`u64`).
    pub(crate) const SLAB: u8 = 11;
    /// Child to parent, in place of a frame of another tag whose payload
    /// is the whole of a frame its parent lent it in a slab, unchanged.
    /// The body is as a `SLAB` frame's.
    pub(crate) const SLAB_BACK: u8 = 12;
    /// Child to parent: it unmapped one frame of a slab it was lent. The
    /// body is the slab's number (`u32`).
    pub(crate) const RELEASE: u8 = 13;
    /// Parent to child, before `ARGS`: the initializer to run once before
    /// the process's first call. The body is a `CALL` frame's.
    pub(crate) const INIT: u8 = 14;
}

/// The error an `ERROR` frame carries.
pub(crate) fn remote(body: &[u8]) -> Error {
    match decode::<String>(body) {
        Ok(message) => Error::Remote { message },
        Err(err) => err,
    }
}

/// Exit status of a child whose environment or first frame was malformed, or
/// whose parent vanished before sending the arguments.
pub const EXIT_PROTOCOL: i32 = 120;
/// Exit status of a child asked to run a name that is not registered.
pub const EXIT_UNREGISTERED: i32 = 121;
/// Exit status of a child whose build differs from its parent's.
pub const EXIT_VERSION_SKEW: i32 = 122;
/// Exit status of a child that aborted because an allocation failed,
/// reported as [`Error::LimitExceeded`] under a
/// [`Builder::memory_limit`](crate::Builder::memory_limit), and as
/// [`Error::OutOfMemory`] otherwise.
///
/// A child tells such an abort from any other by `errno`: the C allocator
/// sets it to `ENOMEM` when it fails, and Rust's allocation-failure path
/// (a printed line, then `abort()`) keeps it, unless std also prints a
/// backtrace there (`RUST_BACKTRACE` set), which overwrites it. Stable
/// Rust has no hook into that path (`std::alloc::set_alloc_error_hook` and
/// `-Z oom=panic` are unstable), so where the evidence is lost the abort is
/// reported as it looks: [`Error::Signaled`] with `SIGABRT`.
pub const EXIT_OUT_OF_MEMORY: i32 = 123;
/// Exit status of a child whose function overflowed its stack, reported
/// as [`Error::StackOverflow`].
///
/// A child runs its function before std's runtime starts, so std's own
/// overflow handler is not there; pproc's tells a fault in the guard region
/// below the stack of the thread that runs the function from any other
/// fault, writes std's line (naming the function) to standard error, and
/// exits with this status. Any other fault, and an overflow on a thread
/// the function spawned, is reported as it looks: [`Error::Signaled`]
/// with `SIGSEGV` (or `SIGBUS`).
pub const EXIT_STACK_OVERFLOW: i32 = 124;

/// Why a child could not run its function, sent in a `FAIL` frame.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum Refusal {
    Unregistered { name: String },
    VersionSkew { parent: u64, child: u64 },
    Codec { message: String },
    Setup { name: String, message: String },
}

impl From<Refusal> for Error {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Unregistered { name } => Self::Unregistered { name },
            Refusal::VersionSkew { parent, child } => Self::VersionSkew {
                parent,
                child,
                host: None,
            },
            Refusal::Codec { message } => Self::Codec { message },
            Refusal::Setup { name, message } => Self::Setup { name, message },
        }
    }
}

/// A panic's message and location, as sent in a `PANIC` frame.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct PanicReport {
    pub(crate) message: String,
    pub(crate) location: Option<String>,
    /// The backtrace, when the child captured one (`RUST_BACKTRACE`).
    pub(crate) backtrace: Option<String>,
}

impl From<PanicReport> for Error {
    fn from(report: PanicReport) -> Self {
        Self::Panicked {
            message: report.message,
            location: report.location,
            backtrace: report.backtrace,
        }
    }
}

/// Splits a `CALL` body into the function's name and its arguments.
pub(crate) fn split_call(body: &[u8]) -> Option<(String, Vec<u8>)> {
    let len = usize::try_from(u32::from_le_bytes(body.get(..4)?.try_into().ok()?)).ok()?;
    let name = std::str::from_utf8(body.get(4..4 + len)?).ok()?;
    Some((name.to_owned(), body[4 + len..].to_vec()))
}

/// The body of a `CALL` or `INIT` frame: the name's length, the name, the
/// arguments.
pub(crate) fn call_body(name: &str, args: &[u8]) -> Result<Vec<u8>, Error> {
    let mut body = Vec::with_capacity(4 + name.len() + args.len());
    put_call_body(&mut body, name, args)?;
    Ok(body)
}

/// Appends a whole `CALL` frame (header, tag and body) to `out`, so that
/// a batch of calls goes out in one write.
pub(crate) fn push_call(out: &mut Vec<u8>, name: &str, args: &[u8]) -> Result<(), Error> {
    out.extend_from_slice(&header(1 + 4 + name.len() + args.len())?);
    out.push(tag::CALL);
    put_call_body(out, name, args)
}

/// Appends the body of a `CALL` or `INIT` frame to `out`.
fn put_call_body(out: &mut Vec<u8>, name: &str, args: &[u8]) -> Result<(), Error> {
    let name_len = u32::try_from(name.len())
        .map_err(|_| Error::codec(format_args!("a function name of {} bytes", name.len())))?;
    out.extend_from_slice(&name_len.to_le_bytes());
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(args);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_frames_round_trip() {
        let mut frames = Vec::new();
        push_call(&mut frames, "m::f", &[1, 2, 3]).unwrap();
        push_call(&mut frames, "g", &[]).unwrap();
        let first = super::super::codec::split_frame(&frames, 1, 1 << 20)
            .unwrap()
            .unwrap();
        assert_eq!(first[0], tag::CALL);
        let body = &first[1..];
        assert_eq!(split_call(body), Some(("m::f".to_owned(), vec![1, 2, 3])));
        let rest = &frames[4 + first.len()..];
        let second = super::super::codec::split_frame(rest, 1, 1 << 20)
            .unwrap()
            .unwrap();
        assert_eq!(split_call(&second[1..]), Some(("g".to_owned(), vec![])));
        assert_eq!(split_call(&body[..5]), None);
        assert_eq!(split_call(&[]), None);
    }
}
