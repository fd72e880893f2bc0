//! Not public API. Used by code that `#[parallel]` generates.

pub use crate::child::{Context, run_channel_entry, run_entry};
pub use crate::manager::{SharedEntry, shared_create, shared_invoke};
pub use crate::registry::Entry;

use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::call::Call;
use crate::channel::Channel;

/// Fails to compile, at the type's span, unless `T` can cross a process
/// boundary: as an argument, a result or a message of a `#[parallel]`
/// function. One error, which says so.
pub const fn assert_crosses<T: Crosses<Via>, Via>() {}

/// A type that can cross a process boundary: `Serialize +
/// DeserializeOwned`.
///
/// The second impl never applies (nothing is [`Never`]). With two
/// candidates, a type that is neither fails here, at the root, with this
/// message, rather than once for each bound it lacks.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot cross into another process",
    label = "arguments, results and messages of `#[parallel]` functions must be `Serialize + DeserializeOwned`",
    note = "derive `serde::Serialize` and `serde::Deserialize` for a type of yours; a type of another crate may offer them behind a `serde` feature"
)]
pub trait Crosses<Via> {}

/// How most types cross: serde.
pub enum BySerde {}

/// How no type crosses.
pub enum Nowhere {}

/// Implemented by no type.
pub trait Never {}

impl<T: Serialize + DeserializeOwned> Crosses<BySerde> for T {}

impl<T: Never> Crosses<Nowhere> for T {}

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
    fn call<R, S, V, K>(&self, name: &'static str) -> Call<R, S, V, K>;
}

impl<A: Serialize> Encode for &Args<'_, A> {
    fn call<R, S, V, K>(&self, name: &'static str) -> Call<R, S, V, K> {
        Call::new(name, self.0)
    }
}

/// [`Encode`] for arguments that cannot cross: never runs, since the
/// program does not compile.
pub trait Unencodable {
    /// Unreachable.
    fn call<R, S, V, K>(&self, name: &'static str) -> Call<R, S, V, K>;
}

impl<A> Unencodable for Args<'_, A> {
    fn call<R, S, V, K>(&self, _name: &'static str) -> Call<R, S, V, K> {
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

/// Fails to compile, at the field's span, unless the field can take `T`.
pub const fn assert_extend<C: Extend<T>, T>() {}

/// The value of a routed call, as the type its function returns.
///
/// # Errors
///
/// [`Error::Codec`](crate::Error::Codec) if the call was built with another
/// result type than its function's.
pub fn downcast<V: 'static, T: 'static>(value: T, origin: &crate::Origin<'_>) -> crate::Result<V> {
    let value: Box<dyn std::any::Any> = Box::new(value);
    value
        .downcast::<V>()
        .map(|v| *v)
        .map_err(|_| crate::Error::Codec {
            message: format!(
                "the values of `{}` are not of type `{}`",
                origin.name(),
                std::any::type_name::<V>()
            ),
        })
}

/// The error for a value that no field takes.
#[must_use]
pub fn unrouted(origin: &crate::Origin<'_>) -> crate::Error {
    crate::Error::Unrouted {
        name: origin.name().to_owned(),
    }
}
