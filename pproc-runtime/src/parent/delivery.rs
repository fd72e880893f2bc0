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
pub trait Delivery: sealed::Sealed + 'static {
    /// Whether the values arrive on the channel.
    const STREAMS: bool;
    /// The type of the values an exchange stores, for a function that
    /// returns `R` and sends `V` to the parent.
    type Item<R, V>;
}

/// The [`Delivery`] of a function that returns its value: an exchange
/// stores the returned `R`.
#[derive(Clone, Copy, Debug)]
pub enum Returns {}

/// The [`Delivery`] of a channel-style function: an exchange stores the
/// values it sends, and ignores its return value (pprocess's "return value
/// is ignored"). A panic or a kill is still a failure of the call.
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
