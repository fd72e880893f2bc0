//! What every child does before its function runs: adopt the descriptor
//! its parent placed, prove it is the parent's build, find the function,
//! read its arguments, and share its channel with the panic hook.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use crate::registry::{self, Entry};
use crate::wire::conn::{Conn, Next};
use crate::wire::frame::{EXIT_UNREGISTERED, EXIT_VERSION_SKEW, Refusal, split_call, tag};
use crate::wire::shm::Payload;
use crate::wire::wait::Deadline;

/// Takes ownership of the descriptor the parent placed at `fd`, and keeps
/// it out of the processes that user code starts.
pub(crate) fn adopt(fd: RawFd) -> Option<OwnedFd> {
    // SAFETY: the parent placed the descriptor here with a posix_spawn
    // dup2 action, before this program ran; nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let cloexec = nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC);
    nix::fcntl::fcntl(&fd, cloexec).ok()?;
    Some(fd)
}

/// Checks that this program is the build the parent expects (`fingerprint`);
/// otherwise tells the parent and returns the exit status to leave with.
pub(crate) fn check_build(conn: &mut Conn, fingerprint: u64) -> Result<(), i32> {
    let ours = registry::fingerprint();
    if ours == fingerprint {
        return Ok(());
    }
    let refusal = Refusal::VersionSkew {
        parent: fingerprint,
        child: ours,
    };
    let _ = conn.send_value(tag::FAIL, &refusal);
    Err(EXIT_VERSION_SKEW)
}

/// The function registered as `name`; otherwise tells the parent and
/// returns the exit status to leave with.
pub(crate) fn find(conn: &mut Conn, name: &str) -> Result<&'static Entry, i32> {
    registry::lookup(name).ok_or_else(|| {
        let refusal = Refusal::Unregistered {
            name: name.to_owned(),
        };
        let _ = conn.send_value(tag::FAIL, &refusal);
        EXIT_UNREGISTERED
    })
}

/// Waits for the `ARGS` frame; `None` if the parent went away or sent
/// something else.
pub(crate) fn first_frame(conn: &mut Conn) -> Option<Payload> {
    wait_for(conn, tag::ARGS, |body| Some(Payload::of(body)))
}

/// A process's initializer, as its `INIT` frame names it: the registered
/// name and the serialized arguments.
pub(crate) type Init = (String, Vec<u8>);

/// Waits for the `ARGS` frame, and the `INIT` frame before it that names
/// the process's initializer, where its parent set one: the
/// initializer's name and arguments, then the arguments. `None` if the
/// parent went away or sent something else.
pub(crate) fn first_frames(conn: &mut Conn) -> Option<(Option<Init>, Payload)> {
    enum First {
        Init(String, Vec<u8>),
        Args(Payload),
    }
    let mut init = None;
    loop {
        let next = conn.next(Deadline::Never, None, |tag, body| match tag {
            tag::INIT if init.is_none() => {
                split_call(body).map(|(name, args)| First::Init(name, args))
            }
            tag::ARGS => Some(First::Args(Payload::of(body))),
            _ => None,
        });
        match next {
            Ok(Next::Frame(Some(First::Init(name, args)))) => init = Some((name, args)),
            Ok(Next::Frame(Some(First::Args(args)))) => return Some((init, args)),
            _ => return None,
        }
    }
}

/// Blocks until the next frame, and reads it with `read` if its tag is
/// `want`; `None` if the parent went away or sent anything else.
pub(crate) fn wait_for<T>(
    conn: &mut Conn,
    want: u8,
    read: impl Fn(&[u8]) -> Option<T>,
) -> Option<T> {
    let next = conn.next(Deadline::Never, None, |tag, body| {
        (tag == want).then(|| read(body)).flatten()
    });
    match next {
        Ok(Next::Frame(frame)) => frame,
        _ => None,
    }
}
