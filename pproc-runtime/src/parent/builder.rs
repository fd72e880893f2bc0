//! Options for starting children, and the one place where a child is
//! started and its handle born.

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::call::Call;
use super::delivery::Returns;
use super::handle::Handle;
use crate::error::{Error, Result};
use crate::process::limits::Limits;
use crate::process::{capture, spawn};
use crate::registry;
use crate::remote::{Cluster, Launcher};
use crate::wire::conn::{self, Conn, DEFAULT_MAX_FRAME};
use crate::wire::frame::{call_body, tag};
use crate::wire::log;
use crate::wire::spec::Mode;

/// Arguments up to this size are written before the child exists: a
/// socket's buffer holds them whole, so the write cannot wait on a reader.
const EARLY_ARGS: usize = 16 * 1024;

impl<R, S, V, K, F> Call<R, S, V, K, F> {
    /// Runs the call in a new child process, with the default options.
    ///
    /// # Errors
    ///
    /// As [`Builder::start`].
    pub fn start(self) -> Result<Handle<R, S, V, K>> {
        Builder::new().start(self)
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
    /// Where children run: here, or on the hosts of a launcher or a
    /// cluster.
    placement: Placement,
    /// The body of the `INIT` frame each process gets before its first
    /// call (the initializer's name and arguments), or why its arguments
    /// did not serialize.
    init: Option<Arc<Result<Vec<u8>, String>>>,
}

/// Where a builder's children run.
#[derive(Clone, Debug, Default)]
enum Placement {
    #[default]
    Here,
    On(Arc<dyn Launcher>),
    Spread(Cluster),
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
            placement: Placement::Here,
            init: None,
        }
    }

    /// Starts children on another host, through `launcher`: ssh
    /// ([`Ssh`](crate::Ssh)), Slurm's `srun` ([`Srun`](crate::Srun)), or any
    /// command prefix ([`Prefix`](crate::Prefix)).
    ///
    /// The first child on a host starts pproc's agent there through the
    /// launcher: this same program, speaking pproc's frames over the
    /// launcher's standard input and output. It runs from the same path
    /// where the host has this build there (a shared filesystem), and
    /// otherwise from a copy kept by its content hash in a cache directory
    /// on the host, made once (see [`Binary`](crate::Binary)). The agent starts each child on its host as a local parent
    /// would, and relays its frames; the child's handle works as for a
    /// local one: values, results, panics, exit statuses and signals,
    /// `kill` and `terminate`, which reach the child's process group
    /// there. Later children on the host reuse the agent. What the child
    /// prints to standard output or error comes out on this process's
    /// standard error.
    ///
    /// A host that cannot be reached, or whose agent does not answer within
    /// the launcher's connect timeout, is [`Error::Launch`]; an agent of
    /// another build is [`Error::VersionSkew`] with the host; a host lost
    /// while children run there (the agent, the launcher or the link gone)
    /// ends them with [`Error::HostLost`]. The agent stops its children's
    /// process groups when the link ends, whichever end went first.
    ///
    /// The agent applies the builder's resource limits and deadline on the
    /// host, so they end a child there as here ([`Error::LimitExceeded`],
    /// [`Error::Timeout`]). Captured output ([`capture_output`](Self::capture_output))
    /// crosses the link beside the child's frames, and a manager's proxies
    /// work there, through the link. A [`program`](Self::program) is run
    /// from the same path on the host. Large buffers cross as bytes
    /// (shared memory stays on one host).
    ///
    /// # Examples
    ///
    /// ```
    /// use pproc::{parallel, Builder, Prefix};
    ///
    /// #[parallel]
    /// fn where_am_i() -> u32 {
    ///     std::process::id()
    /// }
    ///
    /// # fn main() -> pproc::Result<()> {
    /// // `env` runs the agent on this host; `Ssh::new("node-b")` would
    /// // run it there.
    /// let remote = Builder::new().launcher(Prefix::new(["env"]).host("local"));
    /// let h = remote.start(where_am_i::call())?;
    /// let pid = h.pid();
    /// assert_eq!(h.join()?, pid);
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn launcher(mut self, launcher: impl Launcher) -> Self {
        self.placement = Placement::On(Arc::new(launcher));
        self
    }

    /// Starts each child on a host of `cluster`: the one with the most
    /// slots free, passing over hosts that cannot be reached (see
    /// [`Cluster`]). Otherwise as [`launcher`](Self::launcher).
    #[must_use]
    pub fn cluster(mut self, cluster: &Cluster) -> Self {
        self.placement = Placement::Spread(cluster.clone());
        self
    }

    /// The slots of the cluster children start on, if they start on one.
    pub(crate) fn cluster_slots(&self) -> Option<usize> {
        match &self.placement {
            Placement::Spread(cluster) => Some(cluster.slots()),
            _ => None,
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

    /// Runs `init` once in each process these options start, before its
    /// first call (multiprocessing's `Pool(initializer=...)`): a
    /// `#[parallel]` function of no result, or a closure that captures
    /// nothing ([`pproc::call`](crate::call)). It sets up what a child does
    /// not inherit from `main`: statics, `OnceLock`s, loggers, config. A
    /// reused worker runs it once, then call after call. For setup that
    /// every child of the program runs, whatever started it, see
    /// `pproc::setup!`.
    ///
    /// An initializer that panics fails every call of its process with
    /// [`Error::Setup`] (its panic message), and the process stays: a pool
    /// or map does not start another in its place, which would fail the
    /// same way. [`Pool`](crate::Pool), [`Map`](crate::Map),
    /// [`Queue`](crate::Queue) and [`Exchange`](crate::Exchange) have an
    /// `initializer` of their own, which sets this on their builder.
    ///
    /// # Examples
    ///
    /// ```
    /// use pproc::{parallel, Builder};
    /// use std::sync::OnceLock;
    ///
    /// static GREETING: OnceLock<String> = OnceLock::new();
    ///
    /// #[parallel]
    /// fn set_greeting(greeting: String) {
    ///     GREETING.set(greeting).unwrap();
    /// }
    ///
    /// #[parallel]
    /// fn greet(name: String) -> String {
    ///     format!("{}, {name}", GREETING.get().map_or("?", String::as_str))
    /// }
    ///
    /// # fn main() -> pproc::Result<()> {
    /// let builder = Builder::new().initializer(set_greeting::call("hello".into()));
    /// let h = builder.start(greet::call("child".into()))?;
    /// assert_eq!(h.join()?, "hello, child");
    ///
    /// // A failing initializer fails the call, with its panic message.
    /// let failing = Builder::new().initializer(pproc::call((), |()| panic!("no config")));
    /// let err = failing.start(greet::call("child".into()))?.join().unwrap_err();
    /// assert!(matches!(err, pproc::Error::Setup { .. }));
    /// assert!(err.to_string().contains("no config"));
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn initializer<F>(mut self, init: Call<(), (), (), Returns, F>) -> Self {
        let (name, args) = init.into_parts();
        let body = args.and_then(|args| call_body(&name, &args).map_err(|err| err.to_string()));
        self.init = Some(Arc::new(body));
        self
    }

    /// These options, with `other`'s initializer where these have none:
    /// for a collection given a builder after its initializer.
    pub(crate) fn keeping_init(mut self, other: &Self) -> Self {
        if self.init.is_none() {
            self.init.clone_from(&other.init);
        }
        self
    }

    /// The `INIT` frame's body for a child of `mode`, where an initializer
    /// is set and the child runs calls.
    fn init_for(&self, mode: Mode) -> Result<Option<&[u8]>> {
        match (&self.init, mode) {
            (Some(init), Mode::Call | Mode::Worker { .. }) => match &**init {
                Ok(body) => Ok(Some(body)),
                Err(message) => Err(Error::Codec {
                    message: format!("the initializer's arguments: {message}"),
                }),
            },
            _ => Ok(None),
        }
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
        let (name, args) = call.into_parts();
        self.start_raw(name, args).map(Handle::cast)
    }

    /// Starts the function registered as `name` with serialized `args`.
    /// Whether a limit is set that bounds a process over its whole life (a
    /// deadline, CPU time): a process reused for many calls would spend it
    /// on all of them together.
    pub(crate) fn bounds_each_process(&self) -> bool {
        self.limits.deadline.is_some() || self.limits.cpu.is_some()
    }

    pub(crate) fn start_raw(
        &self,
        name: String,
        args: Result<Vec<u8>, String>,
    ) -> Result<Handle<(), (), ()>> {
        let args = args.map_err(|message| Error::Codec { message })?;
        if self.program.is_none() && registry::registered_twice(&name) {
            return Err(Error::Spawn(std::io::Error::other(format!(
                "two `#[parallel]` functions are registered as `{name}` (two function bodies \
                 of one module define a function of that name): rename one"
            ))));
        }
        if self.program.is_none() && !registry::is_registered(&name) {
            return Err(Error::Unregistered { name });
        }
        self.spawn(Mode::Call, name, &args, None)
    }

    /// Starts a built-in role ([`Mode::Manager`], [`Mode::Background`])
    /// with serialized `args`.
    pub(crate) fn start_role(&self, mode: Mode, args: &[u8]) -> Result<Handle<(), (), ()>> {
        let name = mode.role_name().unwrap_or("pproc::__role").to_owned();
        self.spawn(mode, name, args, None)
    }

    /// Starts a reusable worker, with a result log where one can be made
    /// (see [`wire::log`](crate::wire::log)).
    pub(crate) fn start_worker(&self) -> Result<Handle<(), (), ()>> {
        let log = log::Reader::create().ok();
        let mode = Mode::Worker { log: log.is_some() };
        let name = mode.role_name().unwrap_or("pproc::__worker").to_owned();
        self.spawn(mode, name, &[], log)
    }

    fn spawn(
        &self,
        mode: Mode,
        name: String,
        args: &[u8],
        log: Option<log::Reader>,
    ) -> Result<Handle<(), (), ()>> {
        match &self.placement {
            Placement::Here => {}
            Placement::On(launcher) => return self.spawn_remote(launcher, mode, &name, args),
            Placement::Spread(cluster) => {
                return cluster.place(|launcher| self.spawn_remote(launcher, mode, &name, args));
            }
        }
        let (ours, theirs) = conn::socketpair()?;
        let pipes = if self.capture {
            Some((capture::pipe()?, capture::pipe()?))
        } else {
            None
        };
        let mut setup = spawn::Setup {
            group: self.group,
            log: log.as_ref().map(|log| log.file().as_fd()),
            ..spawn::Setup::default()
        };
        if let Some(((_, out), (_, err))) = &pipes {
            setup.stdout = Some(out.as_fd());
            setup.stderr = Some(err.as_fd());
        }
        if self.limits.memory.is_some() {
            // Where `RUST_BACKTRACE` asks, std prints a backtrace after a
            // failed allocation, and that print loses the evidence by which
            // the child reports the failure (see `process::setup::watch_aborts`).
            // Panics still capture theirs, through `RUST_LIB_BACKTRACE`.
            let asked = std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0");
            setup.env.push(("RUST_BACKTRACE", "0"));
            if self.backtrace || asked {
                setup.env.push(("RUST_LIB_BACKTRACE", "1"));
            }
        } else if self.backtrace {
            setup.env.push(("RUST_BACKTRACE", "1"));
        }
        let mut conn = Conn::new(ours)?;
        conn.set_max_frame(self.max_frame);
        conn.lend_slabs();
        // Small arguments go ahead of the child, into the socket's buffer,
        // so that it finds them as it starts instead of waiting for them.
        // Under a memory or CPU limit they wait until it applies: no user
        // code runs before.
        let early =
            self.limits.memory.is_none() && self.limits.cpu.is_none() && args.len() <= EARLY_ARGS;
        let init = self.init_for(mode)?;
        if early {
            if let Some(init) = init {
                conn.send_bytes(tag::INIT, init)?;
            }
            conn.send_bytes(tag::ARGS, args)?;
        }
        let spawned = {
            let _span = crate::trace::spawn_span(&name, None);
            let began = std::time::Instant::now();
            let spawned = spawn::spawn(
                &name,
                self.program.as_deref(),
                &theirs,
                registry::fingerprint(),
                mode,
                &setup,
            )?;
            crate::trace::spawned(&name, spawned.pid.as_raw().cast_unsigned(), began.elapsed());
            spawned
        };
        drop(setup);
        drop(theirs);
        let capture = pipes.map(|((out, _), (err, _))| capture::Capture::start(out, err));
        let mut handle = Handle::new(name, conn, spawned);
        if let Some(log) = log {
            handle.set_log(log);
        }
        handle.set_group(self.group);
        if let Some(capture) = capture {
            handle.set_capture(capture?);
        }
        // Before the arguments: no user code runs before they arrive.
        handle.limit(self.limits)?;
        if !early {
            handle.send_args(init, args)?;
        }
        Ok(handle)
    }

    /// Starts a child on the host `launcher` reaches.
    fn spawn_remote(
        &self,
        launcher: &Arc<dyn Launcher>,
        mode: Mode,
        name: &str,
        args: &[u8],
    ) -> Result<Handle<(), (), ()>> {
        let refuse = |what: &str| {
            Err(Error::Spawn(std::io::Error::other(format!(
                "{what} cannot be used with a launcher yet: children on `{}` take none",
                launcher.host()
            ))))
        };
        let mode = match mode {
            // A result log is memory shared with the parent: not there.
            Mode::Worker { .. } => Mode::Worker { log: false },
            Mode::Call => Mode::Call,
            Mode::Manager | Mode::Background { .. } => {
                return refuse("a manager or a background child");
            }
        };
        let asked = std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0");
        let options = crate::remote::link::Options {
            group: self.group,
            program: self.program.as_deref(),
            max_frame: self.max_frame,
            limits: self.limits,
            backtrace: self.backtrace || (self.limits.memory.is_some() && asked),
        };
        let pipes = if self.capture {
            Some((capture::pipe()?, capture::pipe()?))
        } else {
            None
        };
        let (readers, writers) = match pipes {
            Some(((out, out_w), (err, err_w))) => (Some((out, err)), Some([out_w, err_w])),
            None => (None, None),
        };
        let host = launcher.host();
        let _span = crate::trace::spawn_span(name, Some(&host));
        let began = std::time::Instant::now();
        let (conn, pid, end) = crate::remote::link::start(launcher, name, mode, &options, writers)?;
        crate::trace::spawned(name, pid.as_raw().cast_unsigned(), began.elapsed());
        let mut handle = Handle::remote(name.to_owned(), conn, pid, end);
        if let Some((out, err)) = readers {
            handle.set_capture(capture::Capture::start(out, err)?);
        }
        handle.set_group(self.group);
        // The agent applied them: the handle tells by them how it ended.
        handle.note_limits(self.limits);
        handle.send_args(self.init_for(mode)?, args)?;
        Ok(handle)
    }
}
