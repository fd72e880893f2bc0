//! Deferred invocations: a function's name and its serialized arguments.

use std::fmt;
use std::marker::PhantomData;

use serde::{Deserialize, Serialize};

use super::delivery::{Returns, Types};
use super::function::{ByName, Function};
use crate::error::Result;
use crate::wire::codec;

/// A deferred, serializable invocation of a `#[parallel]` function: its
/// registered name and its serialized arguments.
///
/// `#[parallel] fn f(..) -> R` generates `f::call(args…) -> Call<R, (), (),
/// Returns, f::Fn>`; a channel-style function's call also carries the
/// parent's send and receive types, as its [`Handle`](crate::Handle) does.
/// The last type parameter is the function, as a type
/// ([`Function`]), by which an
/// [`Exchange`](crate::Exchange) routes the call's values when it
/// compiles; a call built by name with [`new`](Self::new) has
/// [`ByName`] there, and `.into()` turns a function's call
/// into one (`Call<R>`). A `Call` can be stored, sent to another process,
/// and started later with [`start`](Self::start) or a
/// [`Builder`](crate::Builder).
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
            args: codec::encode(args).map_err(|err| err.to_string()),
            _types: PhantomData,
            _function: PhantomData,
        }
    }
}

impl<R, S, V, K> Call<R, S, V, K> {
    /// A call of the function registered as `name` with arguments already
    /// serialized, or why they could not be.
    pub(crate) fn from_parts(name: &str, args: Result<Vec<u8>, String>) -> Self {
        Self {
            name: name.to_owned(),
            args,
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

/// A function's call, as a call built by name: the same name and
/// arguments, for code that holds calls of several functions together, or
/// sends one to a function that takes a `Call<R>`.
impl<R, S, V, K, F: Function> From<Call<R, S, V, K, F>> for Call<R, S, V, K> {
    fn from(call: Call<R, S, V, K, F>) -> Self {
        call.retype()
    }
}
