//! Running a `#[parallel]` function inside its child: decoding its
//! arguments, calling it under `catch_unwind`, and reporting how it ended
//! (`RESULT`, `PANIC` or `FAIL`), through the panic hook too when a panic
//! aborts.

use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::channel::Channel;
use super::panic::{catch, share};
use super::prelude::{find, first_frame};
use crate::error::Error;
use crate::lock::lock;
use crate::registry::Context;
use crate::wire::conn::{Conn, SharedConn};
use crate::wire::frame::{EXIT_PROTOCOL, Refusal, tag};

/// Runs the function registered as `name` once, with the arguments of the
/// `ARGS` frame; returns the exit status.
pub(crate) fn run_call(mut conn: Conn, name: &str) -> i32 {
    let entry = match find(&mut conn, name) {
        Ok(entry) => entry,
        Err(code) => return code,
    };
    let Some(args) = first_frame(&mut conn) else {
        return EXIT_PROTOCOL;
    };
    entry.run(Context::new(args, share(conn)));
    0
}

/// The body of a forked child ([`process::fork`](crate::process::fork)):
/// runs `f` with its end of the channel, `fd`, and reports its end as a
/// `#[parallel]` child does; returns the exit status.
pub(crate) fn run_forked<T, F>(fd: OwnedFd, f: F) -> i32
where
    T: Serialize,
    F: FnOnce(Channel<T, ()>),
{
    let Ok(conn) = Conn::new(fd) else {
        return EXIT_PROTOCOL;
    };
    let conn = share(conn);
    let channel = Channel::new(Arc::clone(&conn));
    report(&conn, || f(channel));
    0
}

/// Runs a return-value function: decodes its arguments, calls it under
/// `catch_unwind` and sends its result or its panic.
///
/// Not public API: the shim `#[parallel]` generates calls it.
#[doc(hidden)]
pub fn run_entry<A, R>(cx: Context, f: impl FnOnce(A) -> R)
where
    A: DeserializeOwned,
    R: Serialize,
{
    run(cx, |args, _| f(args));
}

/// Runs a channel-style function, handing it the child's end of the channel
/// as its first argument.
///
/// Not public API: the shim `#[parallel]` generates calls it.
#[doc(hidden)]
pub fn run_channel_entry<S, V, A, R>(cx: Context, f: impl FnOnce(Channel<S, V>, A) -> R)
where
    A: DeserializeOwned,
    R: Serialize,
{
    run(cx, |args, conn| f(Channel::new(conn), args));
}

fn run<A, R>(cx: Context, f: impl FnOnce(A, SharedConn) -> R)
where
    A: DeserializeOwned,
    R: Serialize,
{
    let (payload, conn) = cx.into_parts();
    let decoded = payload.decode::<A>();
    // A slab the arguments came in is released with the result, once
    // what was decoded from it has gone too.
    drop(payload);
    let args = match decoded {
        Ok(args) => args,
        Err(err) => {
            let message = format!("the arguments do not decode: {err}");
            let _ = lock(&conn).send_value(tag::FAIL, &Refusal::Codec { message });
            return;
        }
    };
    report(&conn, || f(args, Arc::clone(&conn)));
}

/// Calls `f` under `catch_unwind` and sends its result or its panic.
fn report<R: Serialize>(conn: &Mutex<Conn>, f: impl FnOnce() -> R) {
    let outcome = catch(f);
    let mut conn = lock(conn);
    // The parent may be gone; then there is nobody to tell.
    let _ = match outcome {
        Ok(value) => match conn.send_value(tag::RESULT, &value) {
            Err(Error::Codec { message }) => {
                let message = format!("the result does not encode: {message}");
                conn.send_value(tag::FAIL, &Refusal::Codec { message })
            }
            other => other,
        },
        Err(report) => conn.send_value(tag::PANIC, &report),
    };
}
