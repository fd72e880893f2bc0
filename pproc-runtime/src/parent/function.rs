//! A `#[parallel]` function as a type, which its calls carry so that where
//! their values go is known when the program compiles.

/// A `#[parallel]` function, as a type: `f::Fn`, which `#[parallel]`
/// generates beside `f::call`.
///
/// The calls `f::call` builds carry it, as the last type parameter of
/// [`Call`](crate::Call), so that an [`Exchange`](crate::Exchange) knows when the
/// program compiles whose values a call delivers. A store that routes them
/// by function, such as a `#[derive(Exchange)]` struct with `#[store(from
/// = f)]` fields, takes the calls of the functions it has a field for and
/// no others ([`Route`](crate::Route)).
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

/// The function of a call built by name ([`Call::new`](crate::Call::new)), or of one turned
/// into such a call with `.into()`: known when it runs, not when the
/// program compiles.
///
/// A store that takes every value ([`Store`](crate::Store)) takes these calls too; one
/// that routes by function does not.
///
/// # Examples
///
/// ```
/// use pproc::{parallel, ByName, Call, Exchange, Returns};
///
/// #[parallel]
/// fn add(a: i64, b: i64) -> i64 {
///     a + b
/// }
///
/// # fn main() -> pproc::Result<()> {
/// // Picked by name when the program runs:
/// let by_name: Call<i64, (), (), Returns, ByName> = Call::new(add::NAME, &(2_i64, 3_i64));
/// // A function's call, turned into one:
/// let turned: Call<i64> = add::call(4, 5).into();
/// let mut ex = Exchange::new(Vec::new()); // a `Store` takes them both
/// ex.start(by_name)?;
/// ex.start(turned)?;
/// let mut sums = ex.finish()?;
/// sums.sort_unstable();
/// assert_eq!(sums, [5, 9]);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug)]
pub enum ByName {}
