//! Procedural macros of [pproc](https://docs.rs/pproc). Depend on `pproc`,
//! which re-exports them; their documentation is there.

use proc_macro::TokenStream;

mod parallel;

/// Makes a function runnable in a child process.
///
/// Beside the untouched function, `#[parallel]` generates a module of the
/// same name and visibility with:
///
/// - `start(args…) -> pproc::Result<Handle<R, …>>`: runs the function in a
///   new child process, which re-executes this program and is dispatched by
///   name before `main`;
/// - `call(args…) -> pproc::Call<R, …>`: the same invocation, deferred and
///   serializable;
/// - `const NAME: &str`: the name the function is registered under, its
///   module path.
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
#[proc_macro_attribute]
pub fn parallel(args: TokenStream, item: TokenStream) -> TokenStream {
    parallel::expand(args.into(), item.into()).into()
}
