//! The one error type of pproc.

use std::fmt;
use std::io;

/// What went wrong with a child process or its channel.
///
/// Every fallible operation of pproc returns this one type, so callers match on
/// one enum across spawning, joining, sending and receiving. It is
/// `Send + Sync + 'static` and works with `?`, `anyhow` and `thiserror`.
///
/// `Display` describes this layer only: a variant that wraps another error
/// ([`Spawn`](Error::Spawn), [`Io`](Error::Io)) returns it from
/// [`source`](std::error::Error::source) instead of repeating it, so a
/// report that walks the chain, such as anyhow's `{:#}`, prints each cause
/// once.
///
/// # Examples
///
/// ```
/// use pproc::{parallel, Error};
///
/// #[parallel]
/// fn fails(n: u32) -> u32 {
///     assert!(n < 10, "n is too large: {n}");
///     n
/// }
///
/// # fn main() -> pproc::Result<()> {
/// match fails::start(12)?.join() {
///     Err(Error::Panicked { message, .. }) => assert_eq!(message, "n is too large: 12"),
///     other => panic!("unexpected {other:?}"),
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The operation did not complete in time. Either of two things
    /// happened:
    ///
    /// - A wait with a timeout ran out: [`Handle::join_timeout`],
    ///   [`Handle::recv_timeout`], [`Channel::recv_timeout`],
    ///   [`select`](crate::select), [`waitall`](crate::waitall) and the
    ///   like. Nothing is killed: the child is left running and the handle
    ///   stays usable, to wait again or to kill. [`join_all`](crate::join_all)
    ///   is the exception: it owns its handles, and kills and reaps the
    ///   children still running, each of which gives `Timeout`.
    /// - The child outlived its [`Builder::deadline`](crate::Builder::deadline):
    ///   the watchdog killed it at the deadline (with its process group,
    ///   see [`Builder::process_group`](crate::Builder::process_group)), and
    ///   its result, or a receive once it has ended, is `Timeout` where it
    ///   would otherwise be [`Error::Signaled`]. The child is gone.
    ///
    /// [`Handle::join_timeout`]: crate::Handle::join_timeout
    /// [`Handle::recv_timeout`]: crate::Handle::recv_timeout
    /// [`Channel::recv_timeout`]: crate::Channel::recv_timeout
    #[error("timed out")]
    Timeout,
    /// The child panicked; its message and location were sent back.
    #[error("child panicked: {message}{}", location.as_ref().map(|l| format!(" at {l}")).unwrap_or_default())]
    Panicked {
        /// The panic's message, as `panic!` formatted it.
        message: String,
        /// `file:line:column` of the panic, when known.
        location: Option<String>,
        /// The child's backtrace, when it captured one: with
        /// `RUST_BACKTRACE` set in the child, or
        /// [`Builder::backtrace`](crate::Builder::backtrace).
        backtrace: Option<String>,
    },
    /// The other end sent an error instead of a value
    /// ([`Channel::send_error`](crate::Channel::send_error), concurrence's
    /// `send_exception`), or answered a request with one. The channel goes
    /// on: the next receive gets the next value.
    #[error("the other end sent an error: {message}")]
    Remote {
        /// The error's message, as the sender wrote it.
        message: String,
    },
    /// The child was stopped by one of the resource limits it was started
    /// with ([`Builder::memory_limit`](crate::Builder::memory_limit),
    /// [`Builder::cpu_limit`](crate::Builder::cpu_limit)).
    #[error("{0}")]
    LimitExceeded(Limit),
    /// An allocation failed in a child that had no memory limit from
    /// pproc (the machine, or a limit of the child's own, ran out).
    #[error("child ran out of memory: an allocation failed")]
    OutOfMemory,
    /// The child's function overflowed its stack: it recursed too deep, or
    /// kept too much on the stack (see
    /// [`EXIT_STACK_OVERFLOW`](crate::EXIT_STACK_OVERFLOW)). The child
    /// also wrote std's line for it, naming the function, to its standard
    /// error.
    ///
    /// To fix it, recurse less (an explicit stack or a loop), keep large
    /// values on the heap (`Box`, `Vec`), or run the deep part on a thread
    /// with a bigger stack
    /// ([`std::thread::Builder::stack_size`](std::thread::Builder::stack_size))
    /// inside the function.
    #[error("child `{name}` overflowed its stack")]
    StackOverflow {
        /// The registered name of the function whose child overflowed.
        name: String,
    },
    /// The child was killed by a signal (`kill`, an abort, the OOM killer).
    #[error("child was killed by signal {signal} ({})", signal_name(*signal))]
    Signaled {
        /// The signal number, such as 9 for `SIGKILL`.
        signal: i32,
    },
    /// The child exited before sending a result.
    #[error("child exited with status {code} without a result")]
    Exited {
        /// The child's exit status.
        code: i32,
    },
    /// The peer closed its end of the channel mid-conversation.
    #[error("the other end of the channel is gone")]
    Disconnected,
    /// A frame did not decode, did not encode, or exceeded the frame limit.
    #[error("codec error: {message}")]
    Codec {
        /// What was wrong with the frame.
        message: String,
    },
    /// The child process could not be started. The operating system's
    /// error is the [`source`](std::error::Error::source), not part of the
    /// `Display` text.
    #[error("failed to start a child process")]
    Spawn(#[source] io::Error),
    /// An operating-system call on a channel or a process failed. The
    /// operating system's error is the
    /// [`source`](std::error::Error::source), not part of the `Display`
    /// text.
    #[error("i/o error")]
    Io(#[source] io::Error),
    /// No `#[parallel]` function of that name is registered in the executable.
    #[error("no `#[parallel]` function named `{name}` is registered in this executable")]
    Unregistered {
        /// The name that was asked for.
        name: String,
    },
    /// The process's setup failed before its first call: a function the
    /// program marked with `pproc::setup!` or the initializer
    /// of its builder, pool, map, queue or exchange panicked, or was not
    /// found. Every call that process was given fails with this error,
    /// and a pool or map does not start another process for it in its
    /// place: the same setup would fail again.
    #[error("the child's setup `{name}` failed: {message}")]
    Setup {
        /// The setup function's name, or the initializer's registered name.
        name: String,
        /// Its panic message, or why it did not run.
        message: String,
    },
    /// A value reached an [`Exchange`](crate::Exchange) whose store has no
    /// field for the function that produced it: a store of yours may say
    /// so; a derived one routes when the program compiles.
    #[error("no `#[store]` field takes the values of `{name}`")]
    Unrouted {
        /// The registered name of the function.
        name: String,
    },
    /// A manager and a client could not authenticate each other: the keys
    /// differ, or the other end is not a pproc manager.
    #[error("authentication failed: {message}")]
    Authentication {
        /// What failed.
        message: String,
    },
    /// The parent and the child are different builds of the program.
    #[error(
        "parent and child are different builds (parent {parent:016x}, child {child:016x}{}): rebuild and run one executable",
        on_host(.host.as_deref())
    )]
    VersionSkew {
        /// The parent's build fingerprint.
        parent: u64,
        /// The child's build fingerprint.
        child: u64,
        /// The host the child was to run on, where it is another one
        /// (see [`Builder::launcher`](crate::Builder::launcher)).
        host: Option<String>,
    },
    /// pproc's agent could not be started on another host, or did not
    /// answer as one (see [`Builder::launcher`](crate::Builder::launcher)):
    /// the launcher failed, the host could not be reached in time, or the
    /// program is not there.
    #[error("cannot start pproc's agent on `{host}`: {message}")]
    Launch {
        /// The host, as its launcher names it.
        host: String,
        /// What went wrong, with what the launcher wrote to its standard
        /// error.
        message: String,
    },
    /// The host a child ran on is lost: its agent, its launcher or the
    /// link to it went away before the child's end was known. What the
    /// child sent before that was delivered; whether it finished is not
    /// known.
    #[error("lost the host `{host}` before the child's end was known")]
    HostLost {
        /// The host, as its launcher names it.
        host: String,
    },
}

/// `" on `host`"`, or nothing.
fn on_host(host: Option<&str>) -> String {
    host.map(|host| format!(" on `{host}`")).unwrap_or_default()
}

impl Error {
    /// Whether this is [`Error::Timeout`].
    #[must_use]
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout)
    }

    /// Whether this is [`Error::Disconnected`].
    #[must_use]
    pub fn is_disconnected(&self) -> bool {
        matches!(self, Self::Disconnected)
    }

    /// Whether this is [`Error::Panicked`].
    #[must_use]
    pub fn is_panic(&self) -> bool {
        matches!(self, Self::Panicked { .. })
    }

    /// Whether this is [`Error::Remote`]: an error value the other end sent.
    #[must_use]
    pub fn is_remote(&self) -> bool {
        matches!(self, Self::Remote { .. })
    }

    pub(crate) fn codec(message: impl fmt::Display) -> Self {
        Self::Codec {
            message: message.to_string(),
        }
    }

    /// An [`Error::Io`] from a failed nix call. A crate-private function
    /// rather than `From<nix::Error>`, which as a public trait impl would make
    /// nix part of pproc's API: call sites write
    /// `.map_err(Error::from_errno)?`.
    pub(crate) fn from_errno(err: nix::Error) -> Self {
        Self::Io(io::Error::from(err))
    }
}

/// A resource limit that stopped a child: see [`Error::LimitExceeded`].
///
/// # Examples
///
/// ```
/// use pproc::{parallel, Builder, Error, Limit};
///
/// #[parallel]
/// fn fill(mib: usize) -> usize {
///     std::hint::black_box(vec![1_u8; mib << 20]).len() >> 20
/// }
///
/// # fn main() -> pproc::Result<()> {
/// let limited = Builder::new().memory_limit(256 << 20);
/// assert_eq!(limited.start(fill::call(1))?.join()?, 1);
/// match limited.start(fill::call(1024))?.join() {
///     Err(Error::LimitExceeded(limit)) => {
///         assert_eq!(limit, Limit::Memory { bytes: 256 << 20 });
///         assert!(limit.to_string().contains("256 MiB"));
///     }
///     other => panic!("expected the memory limit, got {other:?}"),
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Limit {
    /// An allocation failed in the child, whose address space was limited
    /// to `bytes` (Rust aborts when one does).
    Memory {
        /// The limit on the child's address space, in bytes.
        bytes: u64,
    },
    /// The child used up its CPU time (`SIGXCPU`).
    CpuTime {
        /// The limit, in whole seconds of CPU time.
        seconds: u64,
    },
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Memory { bytes } => write!(
                f,
                "an allocation failed in the child under its address-space limit of {} MiB",
                bytes / (1 << 20)
            ),
            Self::CpuTime { seconds } => {
                write!(f, "child used up its CPU-time limit of {seconds} s")
            }
        }
    }
}

/// `err` and each of its causes, joined by `": "`: for turning an error into
/// a message, where `Display` alone would drop the causes that `source()`
/// carries.
pub(crate) fn with_causes(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut next = err.source();
    while let Some(cause) = next {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        next = cause.source();
    }
    text
}

/// The conventional name of a signal, or `"unknown signal"`.
fn signal_name(signal: i32) -> &'static str {
    nix::sys::signal::Signal::try_from(signal).map_or("unknown signal", |s| s.as_str())
}

/// The result type of pproc operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_lowercase_and_carries_detail() {
        let err = Error::Panicked {
            message: "boom".into(),
            location: Some("src/lib.rs:3:5".into()),
            backtrace: None,
        };
        assert_eq!(err.to_string(), "child panicked: boom at src/lib.rs:3:5");
        assert_eq!(
            Error::Signaled { signal: 9 }.to_string(),
            "child was killed by signal 9 (SIGKILL)"
        );
        assert_eq!(
            Error::Exited { code: 3 }.to_string(),
            "child exited with status 3 without a result"
        );
        assert_eq!(
            Error::LimitExceeded(Limit::CpuTime { seconds: 2 }).to_string(),
            "child used up its CPU-time limit of 2 s"
        );
        assert_eq!(
            Error::StackOverflow {
                name: "app::deep".into()
            }
            .to_string(),
            "child `app::deep` overflowed its stack"
        );
        assert_eq!(
            Error::Remote {
                message: "no such key".into()
            }
            .to_string(),
            "the other end sent an error: no such key"
        );
    }

    /// The `Display` text of `err` and of each of its sources, outermost
    /// first.
    fn chain(err: &(dyn std::error::Error + 'static)) -> Vec<String> {
        std::iter::successors(Some(err), |e| e.source())
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn wrapped_errors_leave_their_cause_to_source() {
        let os = || io::Error::from_raw_os_error(2);
        let cause = os().to_string();
        for (err, layer) in [
            (Error::Spawn(os()), "failed to start a child process"),
            (Error::Io(os()), "i/o error"),
        ] {
            assert_eq!(chain(&err), [layer, cause.as_str()]);
            assert_eq!(with_causes(&err), format!("{layer}: {cause}"));
        }
    }

    #[test]
    fn error_is_send_sync_static() {
        fn check<T: std::error::Error + Send + Sync + 'static>() {}
        check::<Error>();
    }
}
