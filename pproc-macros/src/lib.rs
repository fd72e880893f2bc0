//! Procedural macros of [pproc](https://docs.rs/pproc). Depend on `pproc`,
//! which re-exports them; their documentation is there.

use proc_macro::TokenStream;

mod errors;
mod exchange;
mod parallel;
mod path;

/// Makes a function runnable in a child process.
///
/// Beside the untouched function, `#[parallel]` generates a module of the
/// same name and visibility with:
///
/// - `start(args…) -> pproc::Result<Handle<R, …>>`: runs the function in a
///   new child process, which re-executes this program and is dispatched by
///   name before `main`;
/// - `call(args…) -> pproc::Call<R, …, f::Fn>`: the same invocation,
///   deferred and serializable, which an exchange routes by `Fn`
///   (`.into()` makes it a `Call<R>` built by name);
/// - `const NAME: &str`: the name the function is registered under, its
///   module path;
/// - `type Output`: the values an exchange stores from it, what it returns
///   or, for a channel-style function, what it sends;
/// - `enum Fn {}`: the function as a type, a
///   [`Function`](../pproc/trait.Function.html).
///
/// Arguments and the return type must be serde types (`Serialize +
/// DeserializeOwned`), passed by value. A function whose first parameter is
/// a [`Channel<S, V>`](../pproc/struct.Channel.html) gets the child's end of
/// a channel there, as in pprocess; its handle then sends `V` and receives
/// `S`.
///
/// `#[parallel]` functions must be items of a module (the top level of a
/// file or a `mod`), not of a function body, and cannot be generic, `async`,
/// `unsafe`, `extern` or methods.
///
/// # Options
///
/// - `crate = path`: where the generated code finds pproc, `::pproc`
///   unless told. A crate that depends on pproc under another name (`pp =
///   { package = "pproc", … }` in its `Cargo.toml`) writes `crate = pp`; one
///   that reaches it through a re-export writes that path, as a `use` at the
///   function would (`crate = crate::support::pproc`, `crate =
///   ::framework::pproc`). The value is a path, not a string.
///
/// # Examples
///
/// ```
/// use pproc::{parallel, Channel};
///
/// #[parallel]
/// fn add(a: i64, b: i64) -> i64 {
///     a + b
/// }
///
/// #[parallel]
/// fn count_to(ch: Channel<u64, String>, n: u64) -> usize {
///     let greeting = ch.recv().unwrap();
///     for i in 0..n {
///         ch.send(&i).unwrap();
///     }
///     greeting.len()
/// }
///
/// # fn main() -> pproc::Result<()> {
/// assert_eq!(add::start(2, 3)?.join()?, 5);
/// assert_eq!(add(2, 3), 5);
/// assert!(add::NAME.ends_with("::add"));
///
/// let h = count_to::start(3)?;
/// h.send(&"hello".to_string())?;
/// let got: Vec<u64> = h.iter().collect::<pproc::Result<_>>()?;
/// assert_eq!(got, [0, 1, 2]);
/// assert_eq!(h.join()?, 5);
/// # Ok(())
/// # }
/// ```
///
/// Through pproc under another name:
///
/// ```
/// # extern crate pproc as pp;
/// // Cargo.toml: pp = { package = "pproc", version = "…" }
/// #[pp::parallel(crate = pp)]
/// fn add(a: i64, b: i64) -> i64 {
///     a + b
/// }
///
/// # fn main() -> pp::Result<()> {
/// assert_eq!(add::start(2, 3)?.join()?, 5);
/// # Ok(())
/// # }
/// ```
#[proc_macro_attribute]
pub fn parallel(args: TokenStream, item: TokenStream) -> TokenStream {
    parallel::expand(args.into(), item.into()).into()
}

/// Implements [`Store`](../pproc/trait.Store.html) for a struct, so that an
/// [`Exchange`](../pproc/struct.Exchange.html) stores results in its fields
/// (pprocess's `store_data`, written for you).
///
/// Field attributes:
///
/// - `#[store]`: the field takes every result through [`Extend`] (so a
///   `Vec<T>`, a `HashSet<T>`, a `BTreeMap<K, V>` from `(K, V)` results, or
///   any collection of yours). Several such fields each get every value.
/// - `#[store(from = f)]`: the field takes the results of the
///   `#[parallel]` function `f` only, so one exchange can run several
///   functions with different result types. In a struct that routes, every
///   storing field names its function, and starting a call of a function
///   that no field names does not compile: the struct implements
///   [`Route`](../pproc/trait.Route.html) for each field's `f::Fn`, and no
///   `Store`.
/// - `#[store(from = f, with = path)]`: calls `path(&mut field, value)` for
///   each result of `f` instead of extending the field.
/// - `#[store(errors)]`: the field collects a
///   [`Failure`](../pproc/struct.Failure.html) (the call's name, index and
///   error) for each failed call, and the exchange goes on. Without it, the
///   first failure stops the exchange and is returned.
///
/// On the struct, `#[store(crate = path)]` tells the generated code where
/// to find pproc, as `#[parallel]`'s option does: the name pproc has in
/// your `Cargo.toml`, or the path of a re-export.
///
/// # Examples
///
/// ```
/// use std::collections::BTreeMap;
///
/// use pproc::{parallel, Exchange, Failure};
///
/// #[parallel]
/// fn square(x: u64) -> u64 {
///     assert!(x != 13, "unlucky");
///     x * x
/// }
///
/// #[parallel]
/// fn named(x: u64) -> (u64, String) {
///     (x, format!("#{x}"))
/// }
///
/// #[derive(Default, Exchange)]
/// struct Results {
///     #[store(from = square)]
///     squares: Vec<u64>,
///     #[store(from = named)]
///     names: BTreeMap<u64, String>,
///     #[store(errors)]
///     failures: Vec<Failure>,
/// }
///
/// # fn main() -> pproc::Result<()> {
/// let mut ex = Exchange::new(Results::default()).limit(2);
/// for i in 10..15 {
///     ex.start(square::call(i))?;
///     ex.start(named::call(i))?;
/// }
/// let results = ex.finish()?;
/// assert_eq!(results.squares.len(), 4);
/// assert_eq!(results.names[&12], "#12");
/// assert_eq!(results.failures.len(), 1);
/// assert!(results.failures[0].error.is_panic());
/// # Ok(())
/// # }
/// ```
///
/// Through pproc under another name:
///
/// ```
/// # extern crate pproc as pp;
/// #[pp::parallel(crate = pp)]
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// #[derive(Default, pp::Exchange)]
/// #[store(crate = pp)]
/// struct Squares {
///     #[store]
///     values: Vec<u64>,
/// }
///
/// # fn main() -> pp::Result<()> {
/// let mut ex = pp::Exchange::new(Squares::default());
/// ex.start(square::call(4))?;
/// assert_eq!(ex.finish()?.values, [16]);
/// # Ok(())
/// # }
/// ```
#[proc_macro_derive(Exchange, attributes(store))]
pub fn derive_exchange(input: TokenStream) -> TokenStream {
    exchange::expand(input.into()).into()
}
