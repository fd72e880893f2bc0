//! Deferred invocations and the options for starting them.

use std::fmt;
use std::marker::PhantomData;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::child::WORKER;
use crate::conn::{self, Conn, DEFAULT_MAX_FRAME};
use crate::error::{Error, Result};
use crate::handle::Handle;
use crate::route::ByName;
use crate::{capture, registry, spawn};

/// A deferred, serializable invocation of a `#[parallel]` function: its
/// registered name and its serialized arguments.
///
/// `#[parallel] fn f(..) -> R` generates `f::call(args…) -> Call<R, (), (),
/// Returns, f::Fn>`; a channel-style function's call also carries the
/// parent's send and receive types, as its [`Handle`] does. The last type
/// parameter is the function, as a type ([`Function`](crate::Function)), by
/// which an [`Exchange`](crate::Exchange) routes the call's values when it
/// compiles; a call built by name with [`new`](Self::new) has [`ByName`]
/// there, and `.into()` turns a function's call into one (`Call<R>`). A
/// `Call` can be stored, sent to another process, and started later with
/// [`start`](Self::start) or a [`Builder`].
///
/// # Examples
///
/// ```
/// use pproc::parallel;
///
/// #[parallel]
/// fn add(a: i64, b: i64) -> i64 {
///     a + b
/// }
///
/// # fn main() -> pproc::Result<()> {
/// let c: pproc::Call<i64> = add::call(2, 3).into();
/// assert_eq!(c.name(), add::NAME);
/// assert_eq!(c.start()?.join()?, 5);
/// # Ok(())
/// # }
/// ```
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Call<R, S = (), V = (), K = Returns, F = ByName> {
    name: String,
    /// The serialized arguments, or why they did not serialize.
    args: Result<Vec<u8>, String>,
    #[serde(skip)]
    _types: Types<R, S, V, K>,
    #[serde(skip)]
    _function: PhantomData<fn() -> F>,
}

/// The type parameters of a call or handle: sends `S`, yields `R` and `V`.
pub(crate) type Types<R, S, V, K> = PhantomData<fn(S) -> (R, V, K)>;

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Returns {}
    impl Sealed for super::Streams {}
}

/// How a call delivers its values to an [`Exchange`](crate::Exchange): the
/// last type parameter of [`Call`] and [`Handle`].
///
/// `#[parallel]` picks it: [`Returns`] for a function that returns its
/// value, [`Streams`] for a channel-style function, whose values are the
/// ones it sends on its channel.
pub trait Delivery: sealed::Sealed + 'static {
    /// Whether the values arrive on the channel.
    const STREAMS: bool;
    /// The type of the values an exchange stores, for a function that
    /// returns `R` and sends `V` to the parent.
    type Item<R, V>;
}

/// The [`Delivery`] of a function that returns its value: an exchange
/// stores the returned `R`.
#[derive(Clone, Copy, Debug)]
pub enum Returns {}

/// The [`Delivery`] of a channel-style function: an exchange stores the
/// values it sends, and ignores its return value (pprocess's "return value
/// is ignored"). A panic or a kill is still a failure of the call.
#[derive(Clone, Copy, Debug)]
pub enum Streams {}

impl Delivery for Returns {
    const STREAMS: bool = false;
    type Item<R, V> = R;
}

impl Delivery for Streams {
    const STREAMS: bool = true;
    type Item<R, V> = V;
}

impl<R, S, V, K> Call<R, S, V, K> {
    /// A call of the function registered as `name` with `args` (a tuple of
    /// the function's arguments, without its channel).
    ///
    /// `#[parallel]` generates typed `call` functions; this is for callers
    /// that pick a function by name at run time. The types are not checked
    /// until the child decodes the arguments.
    pub fn new<A: Serialize>(name: impl Into<String>, args: &A) -> Self {
        Self {
            name: name.into(),
            args: conn::encode(args).map_err(|err| err.to_string()),
            _types: PhantomData,
            _function: PhantomData,
        }
    }
}

impl<R, S, V, K, F> Call<R, S, V, K, F> {
    /// The same call, as a call of the function `F2`.
    pub(crate) fn retype<F2>(self) -> Call<R, S, V, K, F2> {
        Call {
            name: self.name,
            args: self.args,
            _types: PhantomData,
            _function: PhantomData,
        }
    }

    /// The name and the serialized arguments (or why they did not
    /// serialize).
    pub(crate) fn into_parts(self) -> (String, Result<Vec<u8>, String>) {
        (self.name, self.args)
    }

    /// The registered name of the function to call.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs the call in a new child process, with the default options.
    ///
    /// # Errors
    ///
    /// As [`Builder::start`].
    pub fn start(self) -> Result<Handle<R, S, V, K>> {
        Builder::new().start(self)
    }
}

impl<R, S, V, K, F> Clone for Call<R, S, V, K, F> {
    fn clone(&self) -> Self {
        Self {
            name: self.name.clone(),
            args: self.args.clone(),
            _types: PhantomData,
            _function: PhantomData,
        }
    }
}

impl<R, S, V, K, F> fmt::Debug for Call<R, S, V, K, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Call")
            .field("name", &self.name)
            .field("args", &self.args.as_ref().map(Vec::len))
            .finish_non_exhaustive()
    }
}

/// Options for starting children, in the manner of
/// [`std::thread::Builder`]: which program, the frame limit, the process
/// group, resource limits, a deadline, output capture and backtraces.
///
/// Limits and the deadline apply to each process started with these
/// options: a reused worker ([`Exchange::reuse`](crate::Exchange::reuse),
/// [`Pool`](crate::Pool)) spends them over all the calls it runs.
///
/// # Examples
///
/// ```
/// use pproc::{parallel, Builder, Error};
///
/// #[parallel]
/// fn big(n: usize) -> Vec<u8> {
///     vec![1; n]
/// }
///
/// # fn main() -> pproc::Result<()> {
/// let limited = Builder::new().max_frame(1024);
/// assert_eq!(limited.start(big::call(10))?.join()?.len(), 10);
/// assert!(matches!(limited.start(big::call(4096))?.join(), Err(Error::Codec { .. })));
/// # Ok(())
/// # }
/// ```
///
/// A deadline kills a child that runs too long:
///
/// ```
/// use std::time::Duration;
/// use pproc::{parallel, Builder, Error};
///
/// #[parallel]
/// fn nap(ms: u64) -> u64 {
///     std::thread::sleep(Duration::from_millis(ms));
///     ms
/// }
///
/// # fn main() -> pproc::Result<()> {
/// let hasty = Builder::new().deadline(Duration::from_millis(100));
/// assert!(matches!(hasty.start(nap::call(60_000))?.join(), Err(Error::Timeout)));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Builder {
    program: Option<PathBuf>,
    max_frame: usize,
    group: bool,
    pub(crate) limits: Limits,
    capture: bool,
    backtrace: bool,
}

/// The resource limits and deadline a child is started with.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Limits {
    pub(crate) deadline: Option<Duration>,
    /// Address space, in bytes.
    pub(crate) memory: Option<u64>,
    /// CPU time, in whole seconds.
    pub(crate) cpu: Option<u64>,
}

impl Default for Builder {
    fn default() -> Self {
        Self::new()
    }
}

impl Builder {
    /// The default options: re-execute this program, frames of up to
    /// 1 GiB, each child in a process group of its own, no limits.
    #[must_use]
    pub fn new() -> Self {
        Self {
            program: None,
            max_frame: DEFAULT_MAX_FRAME,
            group: true,
            limits: Limits::default(),
            capture: false,
            backtrace: false,
        }
    }

    /// Runs children from another executable instead of this one. It must
    /// be the same build: anything else fails with [`Error::VersionSkew`].
    #[must_use]
    pub fn program(mut self, path: impl Into<PathBuf>) -> Self {
        self.program = Some(path.into());
        self
    }

    /// The largest frame the parent accepts from a child, in bytes. A
    /// larger one fails with [`Error::Codec`] before anything is allocated
    /// for it.
    #[must_use]
    pub fn max_frame(mut self, bytes: usize) -> Self {
        self.max_frame = bytes;
        self
    }

    /// Whether each child leads a process group of its own (the default),
    /// so that [`Handle::kill`], [`Handle::terminate`], a deadline and the
    /// parent's death take the processes it started along with it.
    ///
    /// With `false` the child joins the parent's group: a signal from the
    /// terminal (Ctrl-C) reaches it directly, and a kill ends the child
    /// alone. A child in its own group is not in the terminal's foreground
    /// group: it should not read from the terminal (it would be stopped
    /// with `SIGTTIN`), and Ctrl-C reaches it through its parent, whose
    /// death ends it.
    #[must_use]
    pub fn process_group(mut self, own: bool) -> Self {
        self.group = own;
        self
    }

    /// A wall-clock deadline, from the start: a child still running then is
    /// killed (with its process group) and its result is
    /// [`Error::Timeout`]. The kill happens on time whether or not anyone is
    /// waiting on the handle.
    #[must_use]
    pub fn deadline(mut self, after: Duration) -> Self {
        self.limits.deadline = Some(after);
        self
    }

    /// Limits the child's address space (`RLIMIT_AS`) to `bytes`. An
    /// allocation past it fails, and Rust aborts: the result is
    /// [`Error::LimitExceeded`] with [`Limit::Memory`](crate::Limit::Memory).
    /// Any other abort stays [`Error::Signaled`] with `SIGABRT`: the child
    /// tells them apart by `errno`, which a failed allocation leaves at
    /// `ENOMEM` (see [`EXIT_OUT_OF_MEMORY`](crate::EXIT_OUT_OF_MEMORY)).
    /// So that std's own backtrace print does not overwrite it, such a
    /// child runs with `RUST_BACKTRACE=0`; its panics still capture
    /// backtraces where asked, through `RUST_LIB_BACKTRACE`.
    ///
    /// The address space counts every mapping, including reserved but
    /// untouched memory, so leave room above what the child uses.
    #[must_use]
    pub fn memory_limit(mut self, bytes: u64) -> Self {
        self.limits.memory = Some(bytes);
        self
    }

    /// Limits the child's CPU time (`RLIMIT_CPU`), rounded up to whole
    /// seconds: past it the kernel sends `SIGXCPU`, and the result is
    /// [`Error::LimitExceeded`] with [`Limit::CpuTime`](crate::Limit::CpuTime);
    /// a child that ignores that signal is killed a second later.
    #[must_use]
    pub fn cpu_limit(mut self, time: Duration) -> Self {
        let seconds = time.as_secs() + u64::from(time.subsec_nanos() > 0);
        self.limits.cpu = Some(seconds.max(1));
        self
    }

    /// Captures the child's standard output and error instead of sharing
    /// the parent's, as [`std::process::Command::output`] does; read them
    /// with [`Handle::join_output`]. They are drained as the child writes,
    /// so a chatty child never blocks on a full pipe.
    #[must_use]
    pub fn capture_output(mut self, capture: bool) -> Self {
        self.capture = capture;
        self
    }

    /// Has the child capture a backtrace when it panics, as if
    /// `RUST_BACKTRACE=1` were set there (it is, for the child): it arrives
    /// in [`Error::Panicked`]'s `backtrace`. Without this option, a child
    /// captures one where `RUST_BACKTRACE` is set in its environment.
    #[must_use]
    pub fn backtrace(mut self, on: bool) -> Self {
        self.backtrace = on;
        self
    }

    /// The frame limit these options set.
    pub(crate) fn max_frame_bytes(&self) -> usize {
        self.max_frame
    }

    /// Whether children lead process groups of their own.
    pub(crate) fn is_grouped(&self) -> bool {
        self.group
    }

    /// Starts `call` in a new child process.
    ///
    /// # Errors
    ///
    /// [`Error::Unregistered`] if no function of that name is registered,
    /// [`Error::Codec`] if the arguments did not serialize,
    /// [`Error::Spawn`] if the process could not be started (or a limit
    /// could not be set on it).
    pub fn start<R, S, V, K, F>(&self, call: Call<R, S, V, K, F>) -> Result<Handle<R, S, V, K>> {
        self.start_raw(call.name, call.args).map(Handle::cast)
    }

    /// Starts the function registered as `name` with serialized `args`.
    pub(crate) fn start_raw(
        &self,
        name: String,
        args: Result<Vec<u8>, String>,
    ) -> Result<Handle<(), (), ()>> {
        let args = args.map_err(|message| Error::Codec { message })?;
        let builtin = name == WORKER || name == crate::manager::MANAGER;
        if self.program.is_none() && !builtin && !registry::is_registered(&name) {
            return Err(Error::Unregistered { name });
        }
        let (ours, theirs) = conn::socketpair()?;
        let pipes = if self.capture {
            Some((capture::pipe()?, capture::pipe()?))
        } else {
            None
        };
        let mut setup = spawn::Setup {
            group: self.group,
            ..spawn::Setup::default()
        };
        if let Some(((_, out), (_, err))) = &pipes {
            setup.stdout = Some(out.as_fd());
            setup.stderr = Some(err.as_fd());
        }
        if self.limits.memory.is_some() {
            // Where `RUST_BACKTRACE` asks, std prints a backtrace after a
            // failed allocation, and that print loses the evidence by which
            // the child reports the failure (see `child::watch_aborts`).
            // Panics still capture theirs, through `RUST_LIB_BACKTRACE`.
            let asked = std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0");
            setup.env.push(("RUST_BACKTRACE", "0"));
            if self.backtrace || asked {
                setup.env.push(("RUST_LIB_BACKTRACE", "1"));
            }
        } else if self.backtrace {
            setup.env.push(("RUST_BACKTRACE", "1"));
        }
        let spawned = spawn::spawn(
            &name,
            self.program.as_deref(),
            &theirs,
            registry::fingerprint(),
            spawn::Mode::Child,
            &setup,
        )?;
        drop(setup);
        drop(theirs);
        let capture = pipes.map(|((out, _), (err, _))| capture::Capture::start(out, err));
        let mut conn = Conn::new(ours)?;
        conn.set_max_frame(self.max_frame);
        let mut handle = Handle::new(name, conn, spawned);
        handle.set_group(self.group);
        if let Some(capture) = capture {
            handle.set_capture(capture?);
        }
        // Before the arguments: no user code runs before they arrive.
        handle.limit(self.limits)?;
        handle.send_args(&args)?;
        Ok(handle)
    }
}
