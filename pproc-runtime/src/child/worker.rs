//! A reusable worker (pprocess's `MakeReusable`): one process that runs
//! the functions `CALL` frames name, one after the other, until its parent
//! closes the channel.

use std::sync::Arc;

use super::panic::share;
use super::prelude::{first_frame, wait_for};
use crate::lock::lock;
use crate::registry::{self, Context, Entry};
use crate::wire::conn::Conn;
use crate::wire::frame::{EXIT_PROTOCOL, Refusal, split_call, tag};

/// Serves `CALL` frames after the `ARGS` frame that every child gets;
/// returns the exit status.
pub(crate) fn serve(mut conn: Conn) -> i32 {
    if first_frame(&mut conn).is_none() {
        return EXIT_PROTOCOL;
    }
    let conn = share(conn);
    // A batch calls the same function over and over: keep the last one
    // found.
    let mut last: Option<&'static Entry> = None;
    loop {
        let call = next_call(&mut lock(&conn));
        let Some((name, args)) = call else {
            // The parent closed the channel: no more work.
            return 0;
        };
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

/// Waits for the next `CALL` frame; `None` once the parent is gone or
/// sends something else.
fn next_call(conn: &mut Conn) -> Option<(String, Vec<u8>)> {
    wait_for(conn, tag::CALL, split_call)
}
