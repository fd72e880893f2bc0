//! Run ordinary Rust functions in parallel child processes.
//!
//! Annotate a function with [`#[parallel]`](macro@parallel) and call the
//! generated `name::start(args…)`: the function runs in a new child process,
//! a re-execution of the current program that is dispatched by name before
//! `main` runs, and its result comes back through [`Handle::join`].
//!
//! ```
//! use pproc::{parallel, Handle};
//!
//! #[parallel]
//! fn add(a: i64, b: i64) -> i64 {
//!     a + b
//! }
//!
//! # fn main() -> pproc::Result<()> {
//! let h: Handle<i64> = add::start(2, 3)?; // a new child process
//! assert_eq!(h.join()?, 5);
//! assert_eq!(add(2, 3), 5); // still an ordinary function
//! # Ok(())
//! # }
//! ```
//!
//! Processes, not threads: a child that panics, aborts, leaks or is killed
//! cannot take the parent with it, and the parent gets a clear [`Error`]
//! instead.
//!
//! # Child mode
//!
//! `start` re-executes `/proc/self/exe` with the channel at a known
//! descriptor and the function's registered name in the environment. A
//! constructor in the runtime sees this before `main` runs, runs the named
//! function with the arguments sent as the first frame, sends its result
//! back and exits. So there is no `init()` to call: binaries, examples,
//! integration and unit tests, doctests and benches all work as they are.
//!
//! In the child, the function runs from that constructor, after the
//! program's other constructors and instead of `main`. The parent's
//! command-line arguments are not passed on: `std::env::args()` holds only
//! the program's name there. The child's standard streams are the parent's;
//! its `println!` never touches the protocol. A child dies with its parent.
//!
//! Since `main` does not run in the child, nothing it sets up is there:
//! a static or `OnceLock` that `main` fills is empty, a logger it installs
//! is not installed, a directory it changes to is not changed to, and
//! what it read from its arguments is not known. Pass what the function
//! needs as its arguments, or set it up in the function (once per process
//! for a reused worker: a `OnceLock` there). A child is a fresh copy of
//! the program, not a fork of the parent, so it shares no memory with it.
//!
//! # Channels
//!
//! A function whose first parameter is a [`Channel<S, V>`](Channel) can talk
//! to its parent while it runs, pprocess style: the child sends `S` and
//! receives `V`, and the parent's [`Handle<R, V, S, Streams>`](Handle)
//! mirrors it ([`Streams`] tells an [`Exchange`](struct@Exchange) to store what the child
//! sends rather than what it returns).
//! Both ends may send and receive at any time, in any sizes, without
//! deadlock. Values are framed (a 4-byte length, then bincode) over a Unix
//! socket; a frame larger than the limit ([`Builder::max_frame`]) is refused
//! before it is allocated.
//!
//! Values that follow each other closely are gathered into one write of
//! up to 64 KiB. It goes out when it fills, when that end waits to
//! receive, with the result or the panic that ends a call, on
//! [`Channel::flush`] or [`Handle::flush`], and once the oldest value has
//! waited [`DEFAULT_FLUSH_AFTER`] (a millisecond; `set_flush_after` on
//! either end changes it). A value sent after a pause is written at once.
//!
//! Send bytes as [`Bytes`], not `Vec<u8>`: serde hands a `Vec<u8>` over one
//! element at a time, while a [`Bytes`] (or a field marked
//! `#[serde(with = "serde_bytes")]`) is one block, copied with `memcpy`
//! and written to the socket straight from your buffer when it is large.
//! From 4 MiB on it crosses in shared memory instead, and the [`Bytes`]
//! the other end receives is a view of that memory, not a copy.
//!
//! ```
//! use pproc::{parallel, Channel};
//!
//! #[parallel]
//! fn count_to(ch: Channel<u64, String>, n: u64) -> usize {
//!     let greeting = ch.recv().unwrap();
//!     for i in 0..n {
//!         ch.send(&i).unwrap();
//!     }
//!     greeting.len()
//! }
//!
//! # fn main() -> pproc::Result<()> {
//! let h = count_to::start(3)?; // Handle<usize, String, u64, Streams>
//! h.send(&"hello".to_string())?;
//! let got: Vec<u64> = (0..3).map(|_| h.recv()).collect::<Result<_, _>>()?;
//! assert_eq!(got, [0, 1, 2]);
//! assert_eq!(h.join()?, 5);
//! # Ok(())
//! # }
//! ```
//!
//! Every receive answers the same way, on [`Handle`], [`Channel`] and
//! [`Timer`] alike:
//!
//! | call | a value | nothing in time | the sender is done |
//! | --- | --- | --- | --- |
//! | `recv()` | `Ok(v)` | (waits) | `Err(Disconnected)` |
//! | `recv_timeout(t)` | `Ok(v)` | `Err(Timeout)` | `Err(Disconnected)` |
//! | `try_recv()` | `Ok(Some(v))` | `Ok(None)` | `Err(Disconnected)` |
//! | `join_timeout(t)` | `Ok(r)` | `Err(Timeout)`, the handle stays usable | how it ended |
//!
//! A child that ended some other way gives that error instead
//! (`Panicked`, `Signaled`, ...), and an error the other end sent in place
//! of a value is `Err(Remote)`, after which the stream goes on. A
//! [`Timer`]'s receive wraps each run's own `Result` in the receive's:
//! `timer.recv()??`.
//!
//! # Maps, queues and the grain of work
//!
//! [`Map`], [`Queue`] and [`pmap`] run a function over many items, one
//! worker process per core. Workers are reused from item to item, and
//! items go to them in batches whose size is measured as they run
//! ([`BatchSize::Auto`]): about 5 ms of work per dispatch. So there is no
//! grain to choose by hand: items of a few microseconds run hundreds to a
//! dispatch, items of a second one at a time. What an item leaves in its
//! worker (a static, a cache, a leak) is seen by that worker's next items;
//! [`reuse(false)`](Map::reuse) gives every item a fresh process, at about
//! a millisecond each. Either way, an item that panics, aborts or is killed
//! fails alone.
//!
//! ```
//! use pproc::parallel;
//!
//! #[parallel]
//! fn collatz_steps(mut n: u64) -> u32 {
//!     let mut steps = 0;
//!     while n > 1 {
//!         n = if n % 2 == 0 { n / 2 } else { 3 * n + 1 };
//!         steps += 1;
//!     }
//!     steps
//! }
//!
//! # fn main() -> pproc::Result<()> {
//! // Twenty thousand tiny items, on a worker per core.
//! let steps = pproc::pmap(collatz_steps::call, 1..=20_000)?;
//! assert_eq!(steps[26], 111); // 27 takes 111 steps
//! # Ok(())
//! # }
//! ```
//!
//! # Exchanges
//!
//! An [`Exchange`](struct@Exchange) (pprocess's) runs many calls at once under a limit and
//! stores each result in a struct of yours as it arrives: see its
//! documentation, [`Store`] and [`#[derive(Exchange)]`](derive@Exchange).
//!
//! # Supervision
//!
//! A child process can hang, flood, leak or be killed from outside; pproc
//! gives the parent the controls for it (concurrence's, for processes):
//!
//! - [`join_all`] joins many children under one deadline: the finished
//!   give their results, the stragglers are killed and give
//!   [`Error::Timeout`]; [`select`] and [`join_any`] wait for the first to finish;
//!   [`waitall`] for every child (pprocess's).
//! - [`Handle::terminate`] sends `SIGTERM`, then `SIGKILL` after a grace
//!   period. Each child leads a process group of its own
//!   ([`Builder::process_group`]), so a kill, a terminate or a deadline
//!   takes the processes it started along with it, and a child whose
//!   parent dies, however it dies (Ctrl-C at the terminal included), takes
//!   its group down with it. [`children`], [`tree`] and [`parent`] report
//!   the family.
//! - [`Builder`] sets limits per call: a wall-clock
//!   [`deadline`](Builder::deadline) (the child is killed on time and the
//!   result is [`Error::Timeout`]), an address-space and a CPU-time limit
//!   ([`Error::LimitExceeded`]), captured standard output and error
//!   ([`Handle::join_output`]) and panics with their
//!   [`backtrace`](Builder::backtrace).
//! - Request and reply: a child that takes a `Channel<Reply<P>,
//!   Request<Q>>` answers with [`Channel::serve`]; the parent's
//!   [`Handle::call`] waits for the matching reply, with a timeout if asked
//!   ([`Request`] shows replies out of order). [`Channel::send_error`]
//!   sends an error in place of a value ([`Error::Remote`]);
//!   [`Handle::for_each`] is a receiver loop.
//! - Timers: [`later`], [`interval`] and [`rate`] start calls on a
//!   schedule, each run in a child of its own.
//!
//! ```
//! use std::time::Duration;
//! use pproc::{parallel, Builder, Error};
//!
//! #[parallel]
//! fn stuck() -> u32 {
//!     loop {
//!         std::thread::park();
//!     }
//! }
//!
//! #[parallel]
//! fn quick(n: u32) -> u32 {
//!     n + 1
//! }
//!
//! # fn main() -> pproc::Result<()> {
//! let careful = Builder::new().deadline(Duration::from_millis(200));
//! let handles = vec![careful.start(quick::call(1))?, careful.start(stuck::call())?];
//! let results = pproc::join_all(handles, None);
//! assert_eq!(*results[0].as_ref().unwrap(), 2);
//! assert!(matches!(results[1], Err(Error::Timeout))); // killed at its deadline
//! # Ok(())
//! # }
//! ```
//!
//! # Shared objects
//!
//! A [`Manager`] is a server process that owns shared objects (maps,
//! lists, queues, values, namespaces, locks, semaphores, conditions,
//! events, arrays, and types of your own registered with [`shared!`]),
//! reached through serializable proxies from this program, its children and
//! other programs, locally or over TCP with an authentication key: see the
//! [`manager`] module.
//!
//! # Errors
//!
//! Every operation returns the one [`Error`]: a child's panic arrives as
//! [`Error::Panicked`] with its message and location, a kill as
//! [`Error::Signaled`], an exit without a result as [`Error::Exited`], a
//! failed allocation as [`Error::OutOfMemory`], a stack overflow as
//! [`Error::StackOverflow`] with the function's name, a frame that does
//! not decode as [`Error::Codec`]. None of them panics the
//! parent, every child is reaped and every descriptor closed: dropping a
//! [`Handle`] kills a child that is still running and reaps it.
//!
//! An error's `Display` describes its own layer; the operating-system error
//! under [`Error::Spawn`] or [`Error::Io`] is its
//! [`source`](std::error::Error::source), so a report that walks the chain
//! (anyhow's `{:#}`, for one) prints each cause once.
//!
//! # Testing
//!
//! Tests need nothing special: a `#[parallel]` function defined in a test
//! crate, a unit-test module or a doctest is started the same way, and so
//! is one defined inside a function body, as a doctest without `fn main`
//! is:
//!
//! ```
//! use pproc::parallel;
//!
//! #[parallel]
//! fn triple(x: u32) -> u32 {
//!     x * 3
//! }
//!
//! assert_eq!(triple::start(14).unwrap().join().unwrap(), 42);
//! ```
//!
//! The types it takes and returns may be defined in that body too:
//!
//! ```
//! use pproc::parallel;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Job {
//!     n: u32,
//! }
//!
//! #[parallel]
//! fn work(job: Job) -> u32 {
//!     job.n * 2
//! }
//!
//! assert_eq!(work::start(Job { n: 21 }).unwrap().join().unwrap(), 42);
//! ```
//!
//! Two
//! `#[parallel]` functions of one name in two bodies of one module share
//! their registered name, the module's path and theirs: starting either
//! fails with an [`Error::Spawn`] that says to rename one, rather than run
//! the other.
//!
//! # Features
//!
//! | feature | default | what it adds |
//! | --- | --- | --- |
//! | `progress` | off | progress bars ([indicatif]) on [`Map`], [`Queue`], [`Exchange`](struct@Exchange) and [`Pool`]: `.progress(true)` draws one on standard error where it is a terminal, `.progress_bar(bar)` takes a `ProgressBar` of yours (your style, your `MultiProgress`); `pproc::indicatif` re-exports the crate |
//!
//! | `tracing` | off | [tracing] events and spans, target `pproc`, each naming the child by `function` and `pid`: a child started (in a `spawn` span, with its host) and exited (status, lifetime), a call that failed, a batch dispatched to a worker and the batch size chosen, a worker that died and was replaced, a host connected, not connected, lost or disconnected, a manager connection. Levels: failures and losses `warn`, hosts `info`, the rest `debug`. `examples/tracing.rs` prints them with `tracing-subscriber` |
//! | `tokio` | off | [`pproc::tokio`](tokio): a child's result, values and sends as futures and a `Stream` that wait in tokio's reactor (`AsyncHandle`), `JoinSet` for many children, `pool.start(call)?.await`, and a map as a `Stream`; dropping or aborting a future kills and reaps its child. `examples/tokio.rs` |
//!
//! Without the `progress` feature, a call to a progress method fails to compile with
//! a message that says which feature to turn on:
//!
//! ```toml
//! [dependencies]
//! pproc = { version = "0.1", features = ["progress"] }
//! ```
//!
//! [indicatif]: https://docs.rs/indicatif
//! [tracing]: https://docs.rs/tracing
//!
//! # Platform support
//!
//! Linux only: on any other target the build stops at once with one
//! message that says so (pproc-runtime's build script), rather than deep in
//! the code. On Linux, children are started with `posix_spawn` (its cost does not
//! grow with the parent's memory), watched through pidfds and killed with
//! their parent through `PR_SET_PDEATHSIG`. A child that leads its own
//! process group asks for the highest real-time signal (`SIGRTMAX`) on its
//! parent's death, and its handler kills the group: code in a child should
//! not block or take over that signal. Deadlines need pidfds (Linux 5.3).
#![doc(test(attr(deny(warnings))))]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[doc(inline)]
pub use pproc_macros::{Exchange, parallel};
pub use pproc_runtime::{
    Arrivals, Background, BatchSize, Binary, Builder, ByName, Bytes, Call, Channel, ChildInfo,
    Cluster, DEFAULT_FLUSH_AFTER, DEFAULT_MAX_FRAME, Delivery, EXIT_OUT_OF_MEMORY, EXIT_PROTOCOL,
    EXIT_STACK_OVERFLOW, EXIT_UNREGISTERED, EXIT_VERSION_SKEW, Error, Exchange, Failure, Fork,
    Function, Gathered, Handle, HostInfo, Iter, Launcher, Limit, MAX_RATE_OVERLAP, Managed, Map,
    Node, Origin, Output, Pending, Pool, Prefix, Queue, Reply, Request, RequestId, Result, Returns,
    Route, Srun, Ssh, Store, Streams, Task, Timer, call, children, closure, fork,
    free_shared_memory, interval, is_registered, join_all, join_any, later, parent, pmap, rate,
    registered, select, spawn, start_background, tree, waitall,
};

#[cfg(feature = "progress")]
#[cfg_attr(docsrs, doc(cfg(feature = "progress")))]
pub use pproc_runtime::indicatif;
pub use pproc_runtime::manager;
#[doc(no_inline)]
pub use pproc_runtime::manager::Manager;
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub use pproc_runtime::tokio;

/// Registers a type of your own for sharing through a
/// [`Manager`](manager::Manager), with the methods it exposes, and declares
/// the trait that calls them through its proxy,
/// [`Shared<T>`](manager::Shared) (multiprocessing's `CreatorMethod` with
/// `exposed`).
///
/// Only the methods listed are callable through the proxy; each runs in the
/// manager on the one shared value, under its lock. Their arguments are
/// passed by value and must be owned (`String`, not `&str`); arguments and
/// results must be serializable, and the type itself `Serialize +
/// DeserializeOwned + Send` (its initial value travels to the manager). The
/// manager's program must register the type too: a manager started by this
/// program has it; one that another program serves must invoke the same
/// `shared!`.
///
/// # Examples
///
/// ```
/// use pproc::manager::Manager;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// pub struct Tally {
///     total: u64,
///     log: Vec<String>,
/// }
///
/// impl Tally {
///     fn add(&mut self, n: u64, why: String) -> u64 {
///         self.total += n;
///         self.log.push(why);
///         self.total
///     }
///     fn total(&self) -> u64 {
///         self.total
///     }
///     pub fn wipe(&mut self) {
///         self.log.clear();
///     }
/// }
///
/// pproc::shared! {
///     /// What a shared `Tally` offers.
///     pub trait TallyProxy for Tally {
///         fn add(n: u64, why: String) -> u64;
///         fn total() -> u64;
///     }
/// }
///
/// # fn main() -> pproc::Result<()> {
/// let manager = Manager::start()?;
/// let tally = manager.shared(&Tally { total: 0, log: Vec::new() })?;
/// assert_eq!(tally.add(5, "first".into())?, 5);
/// assert_eq!(tally.total()?, 5);
/// // `wipe` is not exposed: calling it by name is refused.
/// let refused = tally.call::<(), ()>("wipe", &());
/// assert!(matches!(refused, Err(pproc::Error::Remote { .. })));
/// # Ok(())
/// # }
/// ```
#[macro_export]
macro_rules! shared {
    (
        $(#[$meta:meta])*
        $vis:vis trait $proxy:ident for $ty:ident {
            $(
                $(#[$method_meta:meta])*
                fn $method:ident ( $( $arg:ident : $arg_ty:ty ),* $(,)? ) $( -> $ret:ty )? ;
            )*
        }
    ) => {
        $(#[$meta])*
        $vis trait $proxy {
            $(
                $(#[$method_meta])*
                ///
                /// # Errors
                ///
                /// As [`Shared::call`]($crate::manager::Shared::call).
                fn $method(&self $(, $arg: $arg_ty)*) -> $crate::Result<$crate::__shared_ret!($($ret)?)>;
            )*
        }

        impl $proxy for $crate::manager::Shared<$ty> {
            $(
                fn $method(&self $(, $arg: $arg_ty)*) -> $crate::Result<$crate::__shared_ret!($($ret)?)> {
                    self.call(::core::stringify!($method), &($($arg,)*))
                }
            )*
        }

        impl $crate::manager::SharedType for $ty {
            const NAME: &'static str = ::core::concat!(::core::module_path!(), "::", ::core::stringify!($ty));
        }

        const _: () = {
            fn __pproc_dispatch(
                value: &mut (dyn ::core::any::Any + ::core::marker::Send),
                method: &str,
                args: &[u8],
            ) -> ::core::result::Result<::std::vec::Vec<u8>, ::std::string::String> {
                match method {
                    $(
                        ::core::stringify!($method) => $crate::__private::shared_invoke(
                            value,
                            args,
                            |this: &mut $ty, ($($arg,)*): ($($arg_ty,)*)| this.$method($($arg),*),
                        ),
                    )*
                    other => ::core::result::Result::Err(::std::format!("no method `{other}`")),
                }
            }
            $crate::__private::inventory::submit! {
                $crate::__private::SharedEntry::new(
                    <$ty as $crate::manager::SharedType>::NAME,
                    &[$(::core::stringify!($method)),*],
                    $crate::__private::shared_create::<$ty>,
                    __pproc_dispatch,
                )
            }
        };
    };
}

// Not public API: the return type of a `shared!` method, `()` if none.
#[doc(hidden)]
#[macro_export]
macro_rules! __shared_ret {
    () => {
        ()
    };
    ($ret:ty) => {
        $ret
    };
}

/// Marks functions that every child of this program runs before its
/// first call, whatever started it (`start`, a `Builder`, a pool, a map,
/// an exchange), and on every host: loggers, config, statics that `main`
/// would set up. A child runs instead of `main`, so what `main` sets up is
/// not there; this is where it goes.
///
/// Each function takes nothing and returns nothing; they run in the order
/// of their paths, before the initializer of a builder or a pool
/// ([`Builder::initializer`]) and before the call. One that panics fails
/// every call of its process with [`Error::Setup`] (a reused worker stays,
/// answering each call so, and is not replaced). Background children
/// ([`start_background`]), which outlive their parent, do not run them.
///
/// # Examples
///
/// ```
/// use std::sync::OnceLock;
///
/// static CONFIG: OnceLock<String> = OnceLock::new();
///
/// fn load_config() {
///     CONFIG.get_or_init(|| "from the environment, a file, ...".to_owned());
/// }
///
/// pproc::setup!(load_config);
///
/// #[pproc::parallel]
/// fn config() -> Option<String> {
///     CONFIG.get().cloned()
/// }
///
/// fn main() -> pproc::Result<()> {
///     load_config(); // the parent sets itself up as usual
///     assert_eq!(config::start()?.join()?.as_deref(), CONFIG.get().map(String::as_str));
///     Ok(())
/// }
/// ```
#[macro_export]
macro_rules! setup {
    ($($f:path),+ $(,)?) => {
        $(
            $crate::__private::inventory::submit! {
                $crate::__private::Setup::new(
                    ::core::concat!(::core::module_path!(), "::", ::core::stringify!($f)),
                    $f,
                )
            }
        )+
    };
}

// Not public API. Used by code that `#[parallel]` generates.
#[doc(hidden)]
pub mod __private {
    pub use ::inventory;
    pub use pproc_runtime::private::*;
}
