//! The top of the runtime: a constructor that runs before `main` in every
//! program that links pproc. In a parent it returns at once; in a child it
//! reads the `PPROC_CHILD` spec, plays the role it names, and exits
//! without ever returning to `main`; with `PPROC_AGENT` set it is a host's
//! agent (see [`remote`](crate::remote)). This is the only file that knows
//! every role.

use std::ffi::CStr;
use std::io::Write;
use std::panic;

use crate::child::{entry, prelude, worker};
use crate::collect::background;
use crate::manager;
use crate::process::setup::{
    Thread, ignore_sigpipe, name_after, tie_to_parent, watch_aborts, watch_overflows,
};
use crate::process::tree;
use crate::remote;
use crate::wire::conn::Conn;
use crate::wire::frame::EXIT_PROTOCOL;
use crate::wire::spec::{ENV, Mode, Spec};

/// The signature glibc calls `.init_array` entries with.
type Constructor =
    unsafe extern "C" fn(libc::c_int, *const *const libc::c_char, *const *const libc::c_char);

/// Runs before `main` in every program that links pproc. In a parent it
/// returns at once; in a child it never returns.
extern "C" fn dispatch(
    count: libc::c_int,
    args: *const *const libc::c_char,
    env: *const *const libc::c_char,
) {
    let Some(spec) = std::env::var_os(ENV) else {
        if let Some(timeout) = std::env::var_os(remote::protocol::ENV) {
            // SAFETY: as for a child, below.
            unsafe {
                run_later_constructors(count, args, env);
                std::env::remove_var(remote::protocol::ENV);
            }
            let timeout = timeout.to_string_lossy().into_owned();
            let code =
                panic::catch_unwind(|| remote::agent::serve(&timeout)).unwrap_or(EXIT_PROTOCOL);
            let _ = std::io::stderr().flush();
            std::process::exit(code);
        }
        return;
    };
    // SAFETY: we are a constructor called by the loader with its own
    // arguments, and we never return to it (see below).
    unsafe { run_later_constructors(count, args, env) };
    if count > 0 {
        // SAFETY: the loader passes `count` NUL-terminated arguments.
        name_after(unsafe { CStr::from_ptr(*args) });
    }
    // SAFETY: constructors run before `main`, while the process has one
    // thread, so nothing reads the environment concurrently.
    unsafe { std::env::remove_var(ENV) };
    let code = panic::catch_unwind(|| child_main(&spec.to_string_lossy())).unwrap_or(EXIT_PROTOCOL);
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    std::process::exit(code);
}

#[used]
#[unsafe(link_section = ".init_array")]
static DISPATCH: Constructor = dispatch;

unsafe extern "C" {
    // Defined by the linker around the executable's `.init_array`.
    static __init_array_start: [usize; 0];
    static __init_array_end: [usize; 0];
}

/// Runs the constructors that come after ours in `.init_array`, so that
/// every `inventory` registration is in before the child looks a name up.
///
/// The linker orders constructors by link order, which fat LTO does not
/// keep: a registration can come after this dispatcher. A child never
/// returns to the loader, so each of these runs exactly once, in order.
///
/// # Safety
///
/// Only for `dispatch`, called by the loader with its arguments, which then
/// never returns.
unsafe fn run_later_constructors(
    count: libc::c_int,
    args: *const *const libc::c_char,
    env: *const *const libc::c_char,
) {
    // SAFETY: the linker defines both symbols around `.init_array`, an
    // array of function addresses (relocated at load time) that lives for
    // the whole process; `end` is not before `start`.
    let entries = unsafe {
        let start = (&raw const __init_array_start).cast::<usize>();
        let end = (&raw const __init_array_end).cast::<usize>();
        let len = usize::try_from(end.offset_from(start)).unwrap_or(0);
        std::slice::from_raw_parts(start, len)
    };
    let ours = dispatch as Constructor as usize;
    let Some(at) = entries.iter().position(|&entry| entry == ours) else {
        return;
    };
    // 0 and -1 are the old terminators some toolchains still emit.
    for &entry in entries[at + 1..]
        .iter()
        .filter(|&&e| e != 0 && e != usize::MAX)
    {
        // SAFETY: every other entry is a constructor that the loader would
        // call next, with these arguments; it will not be called again.
        unsafe {
            let constructor = std::mem::transmute::<usize, Constructor>(entry);
            constructor(count, args, env);
        }
    }
}

/// Plays the role `value`, the spec, names; returns the exit status.
fn child_main(value: &str) -> i32 {
    let Some(spec) = Spec::parse(value) else {
        return EXIT_PROTOCOL;
    };
    match spec.mode {
        Mode::Background { streams } => {
            background::serve::serve(spec.fd, spec.fingerprint, spec.name, streams)
        }
        Mode::Call => tied(&spec).map_or_else(|code| code, |conn| entry::run_call(conn, spec.name)),
        Mode::Worker { log } => {
            tied(&spec).map_or_else(|code| code, |conn| worker::serve(conn, log))
        }
        Mode::Manager => {
            tied(&spec).map_or_else(|code| code, |mut conn| manager::serve_child(&mut conn))
        }
    }
}

/// The set-up of a child tied to its parent: it dies with the parent, its
/// channel is adopted, and its build is checked.
fn tied(spec: &Spec<'_>) -> Result<Conn, i32> {
    if !tie_to_parent(nix::unistd::Pid::from_raw(spec.parent)) {
        return Err(EXIT_PROTOCOL);
    }
    tree::set_parent(spec.parent);
    watch_aborts();
    watch_overflows(Thread::Initial);
    ignore_sigpipe();
    let fd = prelude::adopt(spec.fd).ok_or(EXIT_PROTOCOL)?;
    let mut conn = Conn::new(fd).map_err(|_| EXIT_PROTOCOL)?;
    conn.borrow_slabs();
    prelude::check_build(&mut conn, spec.fingerprint)?;
    Ok(conn)
}
