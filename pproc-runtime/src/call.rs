//! Deferred invocations and the options for starting them.

use std::fmt;
use std::marker::PhantomData;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::child::WORKER;
use crate::conn::{self, Conn, DEFAULT_MAX_FRAME};
use crate::error::{Error, Result};
use crate::handle::Handle;
use crate::{registry, spawn};

/// A deferred, serializable invocation of a `#[parallel]` function: its
/// registered name and its serialized arguments.
///
/// `#[parallel] fn f(..) -> R` generates `f::call(args…) -> Call<R>`; a
/// channel-style function's call also carries the parent's send and receive
/// types, as its [`Handle`] does. A `Call` can be stored, sent to another
/// process, and started later with [`start`](Self::start) or a [`Builder`].
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
/// let c: pproc::Call<i64> = add::call(2, 3);
/// assert_eq!(c.name(), add::NAME);
/// assert_eq!(c.start()?.join()?, 5);
/// # Ok(())
/// # }
/// ```
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Call<R, S = (), V = (), K = Returns> {
    name: String,
    /// The serialized arguments, or why they did not serialize.
    args: Result<Vec<u8>, String>,
    #[serde(skip)]
    _types: Types<R, S, V, K>,
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

impl<R, S, V, K> Clone for Call<R, S, V, K> {
    fn clone(&self) -> Self {
        Self {
            name: self.name.clone(),
            args: self.args.clone(),
            _types: PhantomData,
        }
    }
}

impl<R, S, V, K> fmt::Debug for Call<R, S, V, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Call")
            .field("name", &self.name)
            .field("args", &self.args.as_ref().map(Vec::len))
            .finish_non_exhaustive()
    }
}

/// Options for starting children, in the manner of
/// [`std::thread::Builder`].
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
#[derive(Clone, Debug)]
pub struct Builder {
    program: Option<PathBuf>,
    max_frame: usize,
}

impl Default for Builder {
    fn default() -> Self {
        Self::new()
    }
}

impl Builder {
    /// The default options: re-execute this program, frames of up to
    /// 1 GiB.
    #[must_use]
    pub fn new() -> Self {
        Self {
            program: None,
            max_frame: DEFAULT_MAX_FRAME,
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

    /// The frame limit these options set.
    pub(crate) fn max_frame_bytes(&self) -> usize {
        self.max_frame
    }

    /// Starts `call` in a new child process.
    ///
    /// # Errors
    ///
    /// [`Error::Unregistered`] if no function of that name is registered,
    /// [`Error::Codec`] if the arguments did not serialize,
    /// [`Error::Spawn`] if the process could not be started.
    pub fn start<R, S, V, K>(&self, call: Call<R, S, V, K>) -> Result<Handle<R, S, V, K>> {
        self.start_raw(call.name, call.args).map(Handle::cast)
    }

    /// Starts the function registered as `name` with serialized `args`.
    pub(crate) fn start_raw(
        &self,
        name: String,
        args: Result<Vec<u8>, String>,
    ) -> Result<Handle<(), (), ()>> {
        let args = args.map_err(|message| Error::Codec { message })?;
        if self.program.is_none() && name != WORKER && !registry::is_registered(&name) {
            return Err(Error::Unregistered { name });
        }
        let (ours, theirs) = conn::socketpair()?;
        let spawned = spawn::spawn(
            &name,
            self.program.as_deref(),
            &theirs,
            registry::fingerprint(),
            spawn::Mode::Child,
        )?;
        drop(theirs);
        let mut conn = Conn::new(ours)?;
        conn.set_max_frame(self.max_frame);
        let handle = Handle::new(name, conn, spawned);
        handle.send_args(&args)?;
        Ok(handle)
    }
}
