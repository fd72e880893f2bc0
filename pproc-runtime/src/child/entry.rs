//! Running a `#[parallel]` function inside its child: decoding its
//! arguments, calling it under `catch_unwind`, and reporting how it ended
//! (`RESULT`, `PANIC` or `FAIL`), through the panic hook too when a panic
//! aborts.

use std::cell::{Cell, RefCell};
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::channel::Channel;
use super::panic::{catch, share};
use super::prelude::{Init, find, first_frames};
use crate::error::Error;
use crate::lock::lock;
use crate::registry::{self, Context, Entry};
use crate::wire::conn::{Conn, SharedConn};
use crate::wire::frame::{EXIT_PROTOCOL, Refusal, tag};

/// Runs the function registered as `name` once, with the arguments of the
/// `ARGS` frame; returns the exit status.
pub(crate) fn run_call(mut conn: Conn, name: &str) -> i32 {
    let entry = match find(&mut conn, name) {
        Ok(entry) => entry,
        Err(code) => return code,
    };
    let Some((init, args)) = first_frames(&mut conn) else {
        return EXIT_PROTOCOL;
    };
    let conn = share(conn);
    if let Err(refusal) = prepare(&conn, init) {
        let _ = lock(&conn).send_value(tag::FAIL, &refusal);
        return 0;
    }
    entry.run(Context::new(args, conn));
    0
}

thread_local! {
    /// Set while an initializer runs: its outcome is kept here, not sent.
    static CAPTURING: Cell<bool> = const { Cell::new(false) };
    /// How the initializer ended: `Err` with why it failed.
    static CAPTURED: RefCell<Option<Result<(), String>>> = const { RefCell::new(None) };
}

/// Runs what a process runs before its first call: the program's setup
/// functions (`pproc::setup!`), in the order of their names, then the
/// initializer its parent sent, a return-value function of no result.
/// Returns the refusal that answers every call of this process if one of
/// them panics, or the initializer is not registered.
pub(crate) fn prepare(conn: &SharedConn, init: Option<Init>) -> Result<(), Refusal> {
    for setup in registry::setups() {
        crate::process::setup::running(setup.name());
        catch(|| setup.run()).map_err(|report| Refusal::Setup {
            name: setup.name().to_owned(),
            message: report.message,
        })?;
    }
    let Some((name, args)) = init else {
        return Ok(());
    };
    let shown = if name == CLOSURE {
        "the initializer closure".to_owned()
    } else {
        name.clone()
    };
    let Some(entry) = registry::lookup(&name) else {
        return Err(Refusal::Setup {
            name: shown,
            message: "no `#[parallel]` function of that name is registered".to_owned(),
        });
    };
    CAPTURING.set(true);
    entry.run(Context::new(args, Arc::clone(conn)));
    CAPTURING.set(false);
    match CAPTURED.take() {
        Some(Err(message)) => Err(Refusal::Setup {
            name: shown,
            message,
        }),
        _ => Ok(()),
    }
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

/// The name under which a closure's calls run: the child finds the
/// closure itself from the first bytes of the arguments (see
/// [`run_closure`]).
pub(crate) const CLOSURE: &str = "pproc::closure";

inventory::submit! {
    Entry::new(CLOSURE, "the code offset of a closure's shim", dispatch_closure)
}

/// The arguments of a closure's call: the code offset of its shim
/// ([`registry::code_offset`]), then the closure's own arguments.
pub(crate) type ClosureArgs<A> = ([u8; 8], A);

/// Runs the closure whose shim the arguments name, once the child has
/// checked that the offset lies in its code: a call of another build is
/// refused by the fingerprint before it gets here, and a forged offset
/// cannot send the child anywhere but into code.
fn dispatch_closure(cx: Context) {
    let offset = cx
        .args()
        .first_chunk::<8>()
        .map(|bytes| u64::from_le_bytes(*bytes));
    if let Some(addr) = offset.and_then(registry::code_at) {
        // SAFETY: a parent of this very build (the fingerprint says so)
        // wrote the offset of `run_closure::<F, A, R>`, a `fn(Context)`,
        // which is where the address points in this process.
        let shim = unsafe { std::mem::transmute::<usize, fn(Context)>(addr) };
        shim(cx);
        return;
    }
    let name = match offset {
        Some(offset) => format!("{CLOSURE} at code offset {offset:#x}"),
        None => CLOSURE.to_owned(),
    };
    let (_, conn) = cx.into_parts();
    let _ = lock(&conn).send_value(tag::FAIL, &Refusal::Unregistered { name });
}

/// The shim of a closure `F` that captures nothing: conjures it, and runs
/// it as a return-value function.
pub(crate) fn run_closure<F, A, R>(cx: Context)
where
    F: FnOnce(A) -> R,
    A: DeserializeOwned,
    R: Serialize,
{
    crate::process::setup::running(std::any::type_name::<F>());
    run(cx, |(_, args): ClosureArgs<A>, _| {
        // Refused when the call was built, in the build itself: this
        // only keeps the promise local.
        assert!(size_of::<F>() == 0, "a closure that captures something");
        // SAFETY: `F` has no bytes (asserted above), so every value of it
        // is this one: a closure that captures nothing, or a function
        // item.
        let f = unsafe { std::mem::zeroed::<F>() };
        f(args)
    });
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
            if CAPTURING.get() {
                CAPTURED.set(Some(Err(message)));
            } else {
                let _ = lock(&conn).send_value(tag::FAIL, &Refusal::Codec { message });
            }
            return;
        }
    };
    report(&conn, || f(args, Arc::clone(&conn)));
}

/// Calls `f` under `catch_unwind` and sends its result or its panic.
fn report<R: Serialize>(conn: &Mutex<Conn>, f: impl FnOnce() -> R) {
    let outcome = catch(f);
    if CAPTURING.get() {
        CAPTURED.set(Some(outcome.map(drop).map_err(|report| report.message)));
        return;
    }
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
