//! Not public API. Used by code that `#[parallel]` generates.

pub use crate::child::entry::{run_channel_entry, run_entry};
pub use crate::collect::progress::ProgressFeature;

/// The types of a `#[parallel]` function's parent end, given beside the
/// function (where its types resolve, in a module or a function body) for
/// the module `#[parallel]` generates, which names them through this.
pub trait Signature {
    /// What the child's call returns.
    type Ret;
    /// What the parent sends.
    type Send;
    /// What the parent receives.
    type Recv;
    /// What an exchange stores.
    type Output;
}

/// The type of a `#[parallel]` function's parameter `N`, given as
/// [`Signature`]'s are.
pub trait Param<const N: usize> {
    /// The parameter's type.
    type Type;
}

/// Whether this build has the `progress` feature: for the test that pins
/// the message of a progress method called without it.
pub const PROGRESS: bool = cfg!(feature = "progress");
pub use crate::manager::objects::custom::{SharedEntry, shared_create, shared_invoke};
pub use crate::registry::{Context, Entry, Setup};

use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::child::channel::Channel;
use crate::error::{Error, Result};
use crate::parent::call::Call;
use crate::{Failure, Origin};

/// Fails to compile, at the type's span, unless `T` can cross a process
/// boundary: as an argument, a result or a message of a `#[parallel]`
/// function. One error, which says so.
pub const fn assert_crosses<T: Crosses>() {}

/// A type that can cross a process boundary: `Serialize +
/// DeserializeOwned`.
///
/// Its impl is not recommended, so that a type that is neither fails here,
/// at the root, with this message, rather than once for each bound it
/// lacks.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot cross into another process",
    label = "arguments, results and messages of `#[parallel]` functions must be `Serialize + DeserializeOwned`",
    note = "derive `serde::Serialize` and `serde::Deserialize` for a type of yours; a type of another crate may offer them behind a `serde` feature"
)]
pub trait Crosses {}

#[diagnostic::do_not_recommend]
impl<T: Serialize + DeserializeOwned> Crosses for T {}

/// The arguments of a generated `call`, about to be encoded.
///
/// Generated code calls `(&&Args(&args)).call(NAME)`: [`Encode`] takes
/// arguments that serialize, [`Unencodable`] the others, for which
/// [`assert_crosses`] has failed the build already. So that failure is the
/// only error, and no bound is named twice.
pub struct Args<'a, A>(pub &'a A);

/// Builds the call of a generated `call` function.
pub trait Encode {
    /// The call of the function registered as `name` with these arguments.
    fn call<R, S, V, K, F>(&self, name: &'static str) -> Call<R, S, V, K, F>;
}

impl<A: Serialize> Encode for &Args<'_, A> {
    fn call<R, S, V, K, F>(&self, name: &'static str) -> Call<R, S, V, K, F> {
        Call::<R, S, V, K>::new(name, self.0).retype()
    }
}

/// [`Encode`] for arguments that cannot cross: never runs, since the
/// program does not compile.
pub trait Unencodable {
    /// Unreachable.
    fn call<R, S, V, K, F>(&self, name: &'static str) -> Call<R, S, V, K, F>;
}

impl<A> Unencodable for Args<'_, A> {
    fn call<R, S, V, K, F>(&self, _name: &'static str) -> Call<R, S, V, K, F> {
        unreachable!("arguments that cannot cross do not compile")
    }
}

/// The entry of a generated function, with its arguments `A` and result
/// `R`.
///
/// Generated code calls `(&&Shim::<A, R>::new()).run(cx, f)`: [`Run`]
/// takes types that cross, [`Unrunnable`] the others, for which
/// [`assert_crosses`] has failed the build already.
pub struct Shim<A, R>(PhantomData<fn(A) -> R>);

impl<A, R> Shim<A, R> {
    /// The entry's shim.
    #[must_use]
    pub const fn new() -> Self {
        Self(PhantomData)
    }
}

impl<A, R> Default for Shim<A, R> {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs a generated function in the child.
pub trait Run<A, R> {
    /// Runs a function that returns its value: [`run_entry`].
    fn run(&self, cx: Context, f: impl FnOnce(A) -> R);

    /// Runs a channel-style function: [`run_channel_entry`].
    fn run_channel<S, V>(&self, cx: Context, f: impl FnOnce(Channel<S, V>, A) -> R);
}

impl<A: DeserializeOwned, R: Serialize> Run<A, R> for &Shim<A, R> {
    fn run(&self, cx: Context, f: impl FnOnce(A) -> R) {
        run_entry(cx, f);
    }

    fn run_channel<S, V>(&self, cx: Context, f: impl FnOnce(Channel<S, V>, A) -> R) {
        run_channel_entry(cx, f);
    }
}

/// [`Run`] for types that cannot cross: never runs, since the program does
/// not compile.
pub trait Unrunnable<A, R> {
    /// Unreachable.
    fn run(&self, cx: Context, f: impl FnOnce(A) -> R);

    /// Unreachable.
    fn run_channel<S, V>(&self, cx: Context, f: impl FnOnce(Channel<S, V>, A) -> R);
}

impl<A, R> Unrunnable<A, R> for Shim<A, R> {
    fn run(&self, _cx: Context, _f: impl FnOnce(A) -> R) {
        unreachable!("types that cannot cross do not compile")
    }

    fn run_channel<S, V>(&self, _cx: Context, _f: impl FnOnce(Channel<S, V>, A) -> R) {
        unreachable!("types that cannot cross do not compile")
    }
}

/// This build's fingerprint, as children check it.
#[must_use]
pub fn fingerprint() -> u64 {
    crate::registry::fingerprint()
}

/// Extends a `#[store]` field with one value. Generated code calls it at
/// the field's type, so that a field that cannot take the values fails to
/// compile there, once.
pub fn extend<C: Extend<T>, T>(field: &mut C, value: T) {
    field.extend(Some(value));
}

/// Extends a `#[store(errors)]` field with the failure at `origin`, at the
/// field's type as [`extend`] does.
///
/// # Errors
///
/// Never: the exchange goes on.
pub fn fail<C: Extend<Failure>>(field: &mut C, error: Error, origin: &Origin<'_>) -> Result<()> {
    field.extend(Some(Failure::new(error, origin)));
    Ok(())
}
