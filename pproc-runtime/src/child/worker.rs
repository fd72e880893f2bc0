//! A reusable worker (pprocess's `MakeReusable`): one process that runs
//! the functions `CALL` frames name, one after the other, until its parent
//! closes the channel.

use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Arc;

use nix::fcntl::{FcntlArg, FdFlag};

use super::entry::prepare;
use super::panic::share;
use super::prelude::first_frames;
use crate::lock::lock;
use crate::registry::{self, Context, Entry};
use crate::wire::conn::{Conn, Next};
use crate::wire::frame::{EXIT_PROTOCOL, Refusal, split_call, tag};
use crate::wire::log::{self, LOG_FD};
use crate::wire::wait::Deadline;

/// Serves `CALL` frames after the `ARGS` frame that every child gets;
/// returns the exit status.
pub(crate) fn serve(mut conn: Conn, log: bool) -> i32 {
    if log {
        match adopt_log().map(|log| conn.set_log(log)) {
            Some(Ok(())) => {}
            _ => return EXIT_PROTOCOL,
        }
    }
    let Some((init, _)) = first_frames(&mut conn) else {
        return EXIT_PROTOCOL;
    };
    let conn = share(conn);
    // A setup that failed fails every call, and the process stays: a
    // new one in its place would fail the same way.
    let failed = prepare(&conn, init).err();
    // A batch calls the same function over and over: keep the last one
    // found.
    let mut last: Option<&'static Entry> = None;
    loop {
        let call = next_call(&mut lock(&conn));
        let Some((name, args)) = call else {
            // The parent closed the channel: no more work.
            return 0;
        };
        if let Some(refusal) = &failed {
            if lock(&conn).send_value(tag::FAIL, refusal).is_err() {
                return 0;
            }
            continue;
        }
        let entry = match last {
            Some(entry) if entry.name() == name => Some(entry),
            _ => registry::lookup(&name),
        };
        if let Some(entry) = entry {
            last = Some(entry);
            entry.run(Context::new(args, Arc::clone(&conn)));
        } else {
            let refusal = Refusal::Unregistered { name };
            if lock(&conn).send_value(tag::FAIL, &refusal).is_err() {
                return 0;
            }
        }
    }
}

/// The result log its parent put at [`LOG_FD`], made close-on-exec so that
/// the processes it starts do not inherit it.
fn adopt_log() -> Option<log::Writer> {
    // SAFETY: the parent put the log at this descriptor for us alone.
    let fd = unsafe { OwnedFd::from_raw_fd(LOG_FD) };
    nix::fcntl::fcntl(&fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).ok()?;
    log::Writer::adopt(fd).ok()
}

/// What the parent sends a worker between calls.
enum Order {
    Call(String, Vec<u8>),
    /// Start the log again: it has read every answer.
    Restart(Vec<u8>),
}

/// Waits for the next `CALL` frame; `None` once the parent is gone or
/// sends something else.
fn next_call(conn: &mut Conn) -> Option<(String, Vec<u8>)> {
    loop {
        let next = conn.next(Deadline::Never, None, |tag, body| match tag {
            tag::CALL => split_call(body).map(|(name, args)| Order::Call(name, args)),
            tag::LOG => Some(Order::Restart(body.to_vec())),
            _ => None,
        });
        match next {
            Ok(Next::Frame(Some(Order::Call(name, args)))) => return Some((name, args)),
            Ok(Next::Frame(Some(Order::Restart(body)))) => conn.restart_log(&body).ok()?,
            _ => return None,
        }
    }
}
