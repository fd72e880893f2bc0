//! The messages of request and reply over a child's channel (concurrence's
//! `Message.call` and `reply`): each carries the id that matches a reply to
//! its request.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::codec::decode_prefix;
use crate::error::Result;

/// A request from the parent, as a serving child receives it: an id to
/// answer with, and the body.
///
/// A child that answers requests takes a `Channel<Reply<P>, Request<Q>>`
/// and usually runs [`Channel::serve`](crate::Channel::serve); one that answers out of order
/// keeps the requests and builds each answer with [`reply`](Self::reply).
///
/// # Examples
///
/// ```
/// use pproc::{parallel, Channel, Reply, Request};
///
/// /// Answers each batch of three requests in reverse order.
/// #[parallel]
/// fn backwards(ch: Channel<Reply<u64>, Request<u64>>) {
///     let mut held = Vec::new();
///     for request in &ch {
///         held.push(request.unwrap());
///         if held.len() == 3 {
///             for request in held.drain(..).rev() {
///                 ch.send(&request.reply(request.body * 10)).unwrap();
///             }
///         }
///     }
/// }
///
/// # fn main() -> pproc::Result<()> {
/// let h = backwards::start()?;
/// let ids = [1, 2, 3].map(|n| h.request(&n).unwrap());
/// // Each reply finds its own request, whatever the order they came in.
/// assert_eq!(h.reply(ids[0])?, 10);
/// assert_eq!(h.reply(ids[2])?, 30);
/// assert_eq!(h.reply(ids[1])?, 20);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Request<Q> {
    /// The id its reply must carry.
    pub id: u64,
    /// What is asked.
    pub body: Q,
}

/// A serving child's answer to a [`Request`]: the request's id, and a value
/// or an error message.
///
/// # Examples
///
/// ```
/// use pproc::{parallel, Channel, Reply, Request};
///
/// /// Answers with the number as a `u32`, or says why it is not one.
/// #[parallel]
/// fn narrow(ch: Channel<Reply<u32>, Request<i64>>) {
///     for request in &ch {
///         let request = request.unwrap();
///         let reply = match u32::try_from(request.body) {
///             Ok(n) => request.reply(n),
///             Err(err) => request.fail(err),
///         };
///         ch.send(&reply).unwrap();
///     }
/// }
///
/// # fn main() -> pproc::Result<()> {
/// let h = narrow::start()?;
/// assert_eq!(h.call(&7)?, 7);
/// assert!(h.call(&-1).is_err_and(|err| err.is_remote()));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Reply<P> {
    /// The id of the request it answers.
    pub id: u64,
    /// The answer, or an error that the parent's call returns as
    /// [`Error::Remote`](crate::Error::Remote).
    pub body: Result<P, String>,
}

impl<Q> Request<Q> {
    /// The reply to this request with `value`.
    pub fn reply<P>(&self, value: P) -> Reply<P> {
        Reply {
            id: self.id,
            body: Ok(value),
        }
    }

    /// The reply to this request with an error: the parent's call returns
    /// [`Error::Remote`](crate::Error::Remote) with its message.
    pub fn fail<P>(&self, error: impl fmt::Display) -> Reply<P> {
        Reply {
            id: self.id,
            body: Err(error.to_string()),
        }
    }
}

/// A request in flight, from [`Handle::request`](crate::Handle::request): give it to
/// [`Handle::reply`](crate::Handle::reply) to wait for its answer.
///
/// # Examples
///
/// ```
/// use pproc::{parallel, Channel, Reply, Request};
///
/// #[parallel]
/// fn double(ch: Channel<Reply<u64>, Request<u64>>) {
///     ch.serve(|x| 2 * x).unwrap();
/// }
///
/// # fn main() -> pproc::Result<()> {
/// let h = double::start()?;
/// let (a, b) = (h.request(&1)?, h.request(&2)?); // both in flight
/// assert_ne!(a.get(), b.get());
/// assert_eq!(h.reply(b)?, 4); // each id finds its own reply
/// assert_eq!(h.reply(a)?, 2);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[must_use = "the reply can only be had with the id"]
pub struct RequestId(pub(crate) u64);

impl RequestId {
    /// The id its request and reply carry.
    #[must_use]
    pub fn get(self) -> u64 {
        self.0
    }
}

/// The id at the start of a serialized [`Reply`].
pub(crate) fn reply_id(body: &[u8]) -> Result<u64> {
    decode_prefix::<u64>(body)
}
