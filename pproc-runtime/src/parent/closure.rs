//! Closures run in a child without registration, as procspawn runs them:
//! a closure that captures nothing is found in the child by where its code
//! lies in the executable, which parent and child share (the fingerprint
//! proves they are one build).

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::call::Call;
use super::handle::Handle;
use crate::child::entry::{self, CLOSURE, ClosureArgs};
use crate::error::Result;
use crate::registry::{self, Context};
use crate::wire::codec;

/// Starts `f(args)` in a new child process and returns its handle: a
/// closure run without `#[parallel]`.
///
/// `f` must capture nothing: the child is a new process of the same
/// program, which finds the closure's code but has none of the parent's
/// variables. Pass what it needs in `args` (a tuple for several), which
/// cross as a `#[parallel]` function's arguments do. A closure that
/// captures anything does not compile: the build stops at the call with
/// "a closure run in a child captures nothing: pass what it needs as its
/// arguments". A function's name works too (`pproc::spawn(7, square)`).
///
/// This is `pproc::call(args, f).start()`: for the options of a
/// [`Builder`](crate::Builder), start [`call`]'s `Call` there. Like every
/// child, the closure's process is killed and reaped when its handle is
/// dropped.
///
/// # Errors
///
/// As [`Builder::start`](crate::Builder::start); [`Error::Codec`] if the
/// program has no GNU build-id, without which a child of another build
/// could not be told from one of this (every Linux toolchain's default
/// writes one).
///
/// [`Error::Codec`]: crate::Error::Codec
///
/// # Examples
///
/// ```
/// # fn main() -> pproc::Result<()> {
/// let h = pproc::spawn((6_u64, 7_u64), |(a, b)| a * b)?;
/// assert_eq!(h.join()?, 42);
///
/// // What the closure needs, it gets as arguments.
/// let words = vec!["fork".to_owned(), "exec".to_owned()];
/// let h = pproc::spawn(words, |words: Vec<String>| words.join("+"));
/// assert_eq!(h?.join()?, "fork+exec");
/// # Ok(())
/// # }
/// ```
///
/// A panic in the closure is the child's, as for a `#[parallel]` function:
///
/// ```
/// # fn main() -> pproc::Result<()> {
/// let h = pproc::spawn(0_u32, |d| 10 / d);
/// assert!(matches!(h?.join(), Err(pproc::Error::Panicked { .. })));
/// # Ok(())
/// # }
/// ```
pub fn spawn<A, R, F>(args: A, f: F) -> Result<Handle<R>>
where
    F: FnOnce(A) -> R,
    A: Serialize + DeserializeOwned,
    R: Serialize + DeserializeOwned,
{
    call(args, f).start()
}

/// The call of `f(args)` in a child, for closures as `f::call` is for
/// `#[parallel]` functions: start it, give it to a [`Builder`](crate::Builder), a
/// [`Pool`](crate::Pool) or an [`Exchange`](crate::Exchange), or return it
/// from a [`Map`](crate::Map)'s function (see [`closure`] for that).
///
/// `f` must capture nothing, as for [`spawn`].
///
/// # Examples
///
/// ```
/// use pproc::{Builder, Pool};
///
/// # fn main() -> pproc::Result<()> {
/// let pool = Pool::new(2)?;
/// let squares: Vec<u64> = (1..=3_u64)
///     .map(|x| pool.start(pproc::call(x, |x: u64| x * x))?.join())
///     .collect::<pproc::Result<_>>()?;
/// assert_eq!(squares, [1, 4, 9]);
///
/// let builder = Builder::new().deadline(std::time::Duration::from_secs(10));
/// let h = builder.start(pproc::call("hi".to_owned(), |s: String| s.len()))?;
/// assert_eq!(h.join()?, 2);
/// # Ok(())
/// # }
/// ```
#[must_use = "a call does nothing until it is started"]
pub fn call<A, R, F>(args: A, f: F) -> Call<R>
where
    F: FnOnce(A) -> R,
    A: Serialize + DeserializeOwned,
    R: Serialize + DeserializeOwned,
{
    closure(f)(args)
}

/// A function that makes each item's call of `f`, for a
/// [`Map`](crate::Map), a [`Queue`](crate::Queue) or
/// [`Pool::map`](crate::Pool::map): `Map::new(pproc::closure(|x: u64| x *
/// x), items)`.
///
/// `f` must capture nothing, as for [`spawn`]; the function returned
/// captures nothing either, and can be copied.
///
/// # Examples
///
/// ```
/// use pproc::Map;
///
/// let words = ["a", "bc", "def"].map(String::from);
/// let lengths: Vec<usize> = Map::new(pproc::closure(|s: String| s.len()), words)
///     .map(Result::unwrap)
///     .collect();
/// assert_eq!(lengths, [1, 2, 3]);
/// ```
pub fn closure<A, R, F>(f: F) -> impl Fn(A) -> Call<R> + Copy
where
    F: FnOnce(A) -> R,
    A: Serialize + DeserializeOwned,
    R: Serialize + DeserializeOwned,
{
    captures_nothing::<F>();
    // A value of a type with no bytes holds nothing to drop but its type's
    // own `Drop`, which a closure does not have.
    std::mem::forget(f);
    |args: A| call_of::<F, A, R>(args)
}

/// Stops the build where `F` captures something: its child could not
/// have it.
const fn captures_nothing<F>() {
    const {
        assert!(
            size_of::<F>() == 0,
            "a closure run in a child captures nothing: pass what it needs as its arguments"
        );
    }
}

/// The call of the closure `F`: the code offset of its shim, then `args`.
fn call_of<F, A, R>(args: A) -> Call<R>
where
    F: FnOnce(A) -> R,
    A: Serialize + DeserializeOwned,
    R: Serialize,
{
    let shim: fn(Context) = entry::run_closure::<F, A, R>;
    let encoded = registry::code_offset(shim as usize)
        .ok_or_else(|| {
            "a closure runs in a child only in a program with a GNU build-id (link with \
             `-Wl,--build-id`), by which its child is known to be the same build"
                .to_owned()
        })
        .and_then(|offset| {
            let args: ClosureArgs<A> = (offset.to_le_bytes(), args);
            codec::encode(&args).map_err(|err| err.to_string())
        });
    Call::from_parts(CLOSURE, encoded)
}
