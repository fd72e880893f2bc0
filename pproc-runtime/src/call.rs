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
pub struct Call<R, S = (), V = ()> {
    name: String,
    /// The serialized arguments, or why they did not serialize.
    args: Result<Vec<u8>, String>,
    #[serde(skip)]
    _types: PhantomData<fn(S) -> (R, V)>,
}

impl<R, S, V> Call<R, S, V> {
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
    pub fn start(self) -> Result<Handle<R, S, V>> {
        Builder::new().start(self)
    }
}

impl<R, S, V> Clone for Call<R, S, V> {
    fn clone(&self) -> Self {
        Self {
            name: self.name.clone(),
            args: self.args.clone(),
            _types: PhantomData,
        }
    }
}

impl<R, S, V> fmt::Debug for Call<R, S, V> {
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

    /// Starts `call` in a new child process.
    ///
    /// # Errors
    ///
    /// [`Error::Unregistered`] if no function of that name is registered,
    /// [`Error::Codec`] if the arguments did not serialize,
    /// [`Error::Spawn`] if the process could not be started.
    pub fn start<R, S, V>(&self, call: Call<R, S, V>) -> Result<Handle<R, S, V>> {
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
        )?;
        drop(theirs);
        let mut conn = Conn::new(ours)?;
        conn.set_max_frame(self.max_frame);
        let handle = Handle::new(name, conn, spawned);
        handle.send_args(&args)?;
        Ok(handle)
    }
}
