//! The child's panic hook: a panic of the entry function is data for the
//! parent, and with `panic = "abort"` it is reported before the abort,
//! through the channel the hook shares with the function.

use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Mutex, OnceLock};

use crate::wire::conn::{Conn, SharedConn};
use crate::wire::frame::{PanicReport, tag};

thread_local! {
    /// The last panic on this thread, recorded by the hook for [`catch`].
    static LAST_PANIC: RefCell<Option<PanicReport>> = const { RefCell::new(None) };
    /// Set on the thread that runs the entry function: its panics are
    /// reported to the parent, not printed.
    static IN_ENTRY: Cell<bool> = const { Cell::new(false) };
}

/// The channel of this child, once its prelude has set it up; the panic
/// hook reports through it when panics abort.
static CHILD_CONN: OnceLock<SharedConn> = OnceLock::new();

/// Runs the entry function `f`, catching its panic as the report the
/// parent gets.
pub(crate) fn catch<R>(f: impl FnOnce() -> R) -> Result<R, PanicReport> {
    IN_ENTRY.set(true);
    let outcome = panic::catch_unwind(AssertUnwindSafe(f));
    IN_ENTRY.set(false);
    outcome.map_err(|payload| {
        LAST_PANIC
            .with_borrow_mut(Option::take)
            .unwrap_or_else(|| PanicReport {
                message: payload_text(payload.as_ref()),
                location: None,
                backtrace: None,
            })
    })
}

/// Shares the channel between the function and the panic hook, which
/// reports through it when a panic aborts. The hook is installed once per
/// process: a child of a child keeps its own channel.
pub(crate) fn share(conn: Conn) -> SharedConn {
    let conn = Arc::new(Mutex::new(conn));
    if CHILD_CONN.set(Arc::clone(&conn)).is_ok() {
        install_panic_hook();
    }
    conn
}

fn payload_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "Box<dyn Any>".to_owned())
}

/// Reports panics: those of the entry function's thread are kept for
/// [`catch`] (or, where panics abort, sent at once); those of other
/// threads are printed as usual.
fn install_panic_hook() {
    let previous = panic::take_hook();
    panic::set_hook(Box::new(move |info| {
        // Captured only where `RUST_BACKTRACE` asks for it, as std's own
        // hook does.
        let backtrace = std::backtrace::Backtrace::capture();
        let report = PanicReport {
            message: info.payload_as_str().unwrap_or("Box<dyn Any>").to_owned(),
            location: info.location().map(ToString::to_string),
            backtrace: (backtrace.status() == std::backtrace::BacktraceStatus::Captured)
                .then(|| backtrace.to_string()),
        };
        let in_entry = IN_ENTRY.get();
        if cfg!(panic = "abort") {
            // Nothing will catch this panic: report it now, before the abort.
            if let Some(conn) = CHILD_CONN.get()
                && let Ok(mut conn) = conn.try_lock()
            {
                let _ = conn.send_value(tag::PANIC, &report);
            }
        } else {
            LAST_PANIC.set(Some(report));
        }
        // The entry's panic is data for the parent (`Error::Panicked`);
        // panics on the child's other threads are printed as usual.
        if !in_entry {
            previous(info);
        }
    }));
}
