//! Routing by function: which calls an exchange's store takes, known when
//! the program compiles.

use crate::call::Call;
use crate::{Error, Origin, Result, Store};

/// A `#[parallel]` function, as a type: `f::Fn`, which `#[parallel]`
/// generates beside `f::call`.
///
/// The calls `f::call` builds carry it, as the last type parameter of
/// [`Call`], so that an [`Exchange`](crate::Exchange) knows when the
/// program compiles whose values a call delivers. A store that routes them
/// by function, such as a `#[derive(Exchange)]` struct with `#[store(from
/// = f)]` fields, takes the calls of the functions it has a field for and
/// no others ([`Route`]).
///
/// # Examples
///
/// ```
/// use pproc::{parallel, Function};
///
/// #[parallel]
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// fn name_of<F: Function>() -> &'static str {
///     F::NAME
/// }
///
/// # fn main() {
/// assert_eq!(name_of::<square::Fn>(), square::NAME);
/// # }
/// ```
///
/// The type of its values is `f::Output`: an alias beside it, not an
/// associated type, so that a function of a private type keeps a public
/// `Fn`.
pub trait Function: 'static {
    /// The name the function is registered under: `f::NAME`.
    const NAME: &'static str;
}

/// The function of a call built by name ([`Call::new`]), or of one turned
/// into such a call with `.into()`: known when it runs, not when the
/// program compiles.
///
/// A store that takes every value ([`Store`]) takes these calls too; one
/// that routes by function does not.
#[derive(Clone, Copy, Debug)]
pub enum ByName {}

/// The route of the values of a function, `Self`, of type `T`, into the
/// store `S`: what [`Exchange::start`](crate::Exchange::start) asks of a
/// call's function ([`Function`], or [`ByName`]).
///
/// Every function's values reach every [`Store<T>`]. `#[derive(Exchange)]`
/// on a struct whose fields take `#[store(from = f)]` implements `Route<S,
/// f::Output>` for each such `f::Fn` instead, and no `Store`: a call of a
/// function that no field takes is then an error when the program
/// compiles, not when its value arrives. The functions are [`Store`]'s.
#[diagnostic::on_unimplemented(
    message = "`{S}` does not take the values of `{Self}`",
    label = "`{S}` takes no `{T}` from `{Self}`",
    note = "a `Store<T>` takes the values of type `T` of every function; a struct that derives `Exchange` with `#[store(from = f)]` fields takes those of the functions its fields name, and a call built by name (`Call::new`) names none"
)]
pub trait Route<S, T> {
    /// Stores one value.
    ///
    /// # Errors
    ///
    /// As [`Store::store`].
    fn store(store: &mut S, value: T, origin: &Origin<'_>) -> Result<()>;

    /// Called when a call fails; the default returns the error, which stops
    /// the exchange.
    ///
    /// # Errors
    ///
    /// As [`Store::failed`].
    fn failed(store: &mut S, error: Error, origin: &Origin<'_>) -> Result<()> {
        let _ = (store, origin);
        Err(error)
    }

    /// Called once when a call is over; the default does nothing.
    ///
    /// # Errors
    ///
    /// As [`Store::ended`].
    fn ended(store: &mut S, origin: &Origin<'_>) -> Result<()> {
        let _ = (store, origin);
        Ok(())
    }
}

// Not recommended: a function that no field of a routing store takes is
// then reported as `Route`, with its message, rather than as the `Store`
// bound below.
#[diagnostic::do_not_recommend]
impl<S: Store<T>, F, T> Route<S, T> for F {
    fn store(store: &mut S, value: T, origin: &Origin<'_>) -> Result<()> {
        store.store(value, origin)
    }

    fn failed(store: &mut S, error: Error, origin: &Origin<'_>) -> Result<()> {
        store.failed(error, origin)
    }

    fn ended(store: &mut S, origin: &Origin<'_>) -> Result<()> {
        store.ended(origin)
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
