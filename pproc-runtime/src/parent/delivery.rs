//! How a call delivers its values, and the type parameters that calls
//! and handles carry.

use std::marker::PhantomData;

/// The type parameters of a call or handle: sends `S`, yields `R` and `V`.
pub(crate) type Types<R, S, V, K> = PhantomData<fn(S) -> (R, V, K)>;

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Returns {}
    impl Sealed for super::Streams {}
}

/// How a call delivers its values to an [`Exchange`](crate::Exchange): the
/// last type parameter of [`Call`](crate::Call) and [`Handle`](crate::Handle).
///
/// `#[parallel]` picks it: [`Returns`] for a function that returns its
/// value, [`Streams`] for a channel-style function, whose values are the
/// ones it sends on its channel.
///
/// # Examples
///
/// ```
/// use pproc::{parallel, Call, Channel, Delivery};
///
/// #[parallel]
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// #[parallel]
/// fn count(ch: Channel<u64>, n: u64) {
///     for i in 0..n {
///         ch.send(&i).unwrap();
///     }
/// }
///
/// /// Whether a call's values arrive on its channel.
/// fn streams<R, S, V, K: Delivery, F>(_call: &Call<R, S, V, K, F>) -> bool {
///     K::STREAMS
/// }
///
/// # fn main() {
/// assert!(!streams(&square::call(3)));
/// assert!(streams(&count::call(3)));
/// # }
/// ```
pub trait Delivery: sealed::Sealed + 'static {
    /// Whether the values arrive on the channel.
    const STREAMS: bool;
    /// The type of the values an exchange stores, for a function that
    /// returns `R` and sends `V` to the parent.
    type Item<R, V>;
}

/// The [`Delivery`] of a function that returns its value: an exchange
/// stores the returned `R`.
///
/// # Examples
///
/// ```
/// use pproc::{parallel, Call, Delivery, Exchange, Returns};
///
/// #[parallel]
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// # fn main() -> pproc::Result<()> {
/// let call: Call<u64, (), (), Returns, square::Fn> = square::call(4);
/// assert!(!Returns::STREAMS);
/// let mut ex = Exchange::new(Vec::new());
/// ex.start(call)?;
/// assert_eq!(ex.finish()?, [16]); // the value it returned
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug)]
pub enum Returns {}

/// The [`Delivery`] of a channel-style function: an exchange stores the
/// values it sends, and ignores its return value (pprocess's "return value
/// is ignored"). A panic or a kill is still a failure of the call.
///
/// # Examples
///
/// ```
/// use pproc::{parallel, Call, Channel, Delivery, Exchange, Streams};
///
/// #[parallel]
/// fn count(ch: Channel<u32>, n: u32) -> u32 {
///     for i in 0..n {
///         ch.send(&i).unwrap();
///     }
///     n
/// }
///
/// # fn main() -> pproc::Result<()> {
/// let call: Call<u32, (), u32, Streams, count::Fn> = count::call(3);
/// assert!(Streams::STREAMS);
/// let mut ex = Exchange::new(Vec::new()).continuous(true);
/// ex.start(call)?;
/// assert_eq!(ex.finish()?, [0, 1, 2]); // the values it sent, not the 3 it returned
/// # Ok(())
/// # }
/// ```
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
