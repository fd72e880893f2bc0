//! Request and reply over a child's channel (concurrence's `Message.call`
//! and `reply`), with replies matched to requests by id.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::channel::Channel;
use crate::conn::{Deadline, decode, decode_prefix};
use crate::error::{Error, Result};
use crate::handle::Handle;

/// A request from the parent, as a serving child receives it: an id to
/// answer with, and the body.
///
/// A child that answers requests takes a `Channel<Reply<P>, Request<Q>>`
/// and usually runs [`Channel::serve`]; one that answers out of order
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
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Reply<P> {
    /// The id of the request it answers.
    pub id: u64,
    /// The answer, or an error that the parent's call returns as
    /// [`Error::Remote`].
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
    /// [`Error::Remote`] with its message.
    pub fn fail<P>(&self, error: impl fmt::Display) -> Reply<P> {
        Reply {
            id: self.id,
            body: Err(error.to_string()),
        }
    }
}

/// A request in flight, from [`Handle::request`]: give it to
/// [`Handle::reply`] to wait for its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[must_use = "the reply can only be had with the id"]
pub struct RequestId(u64);

impl RequestId {
    /// The id its request and reply carry.
    #[must_use]
    pub fn get(self) -> u64 {
        self.0
    }
}

/// The replies a handle received for requests other than the one it was
/// waiting for, and the requests nobody waits for any more.
#[derive(Debug, Default)]
pub(crate) struct Book {
    /// A thread is reading the socket for replies.
    pub(crate) reading: bool,
    next: u64,
    filed: HashMap<u64, Vec<u8>>,
    abandoned: HashSet<u64>,
}

impl Book {
    pub(crate) fn next_key(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    pub(crate) fn take(&mut self, key: u64) -> Option<Vec<u8>> {
        self.filed.remove(&key)
    }

    pub(crate) fn file(&mut self, key: u64, body: Vec<u8>) {
        if !self.abandoned.remove(&key) {
            self.filed.insert(key, body);
        }
    }

    pub(crate) fn abandon(&mut self, key: u64) {
        if self.filed.remove(&key).is_none() {
            self.abandoned.insert(key);
        }
    }
}

/// The id at the start of a serialized [`Reply`].
pub(crate) fn reply_id(body: &[u8]) -> Result<u64> {
    decode_prefix::<u64>(body)
}

/// Request and reply with a serving child (concurrence's `Message.call`).
///
/// The child takes a `Channel<Reply<P>, Request<Q>>` and answers with
/// [`Channel::serve`] (or by hand, [`Request::reply`]); the parent's handle
/// then sends requests and waits for their replies. Several requests may be
/// in flight at once, from one thread or many: each reply goes to its own
/// request. A child that dies while a call waits ends the call at once with
/// how it died.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use pproc::{parallel, Channel, Error, Reply, Request};
///
/// #[parallel]
/// fn divider(ch: Channel<Reply<u64>, Request<(u64, u64)>>) {
///     ch.try_serve(|(a, b)| a.checked_div(b).ok_or("division by zero")).unwrap();
/// }
///
/// # fn main() -> pproc::Result<()> {
/// let h = divider::start()?;
/// assert_eq!(h.call(&(84, 2))?, 42);
/// assert!(matches!(h.call(&(1, 0)), Err(Error::Remote { .. })));
/// assert_eq!(h.call_timeout(&(9, 3), Duration::from_secs(10))?, 3);
/// # Ok(())
/// # }
/// ```
impl<R, Q: Serialize, P: DeserializeOwned, K> Handle<R, Request<Q>, Reply<P>, K> {
    /// Sends `request` and waits for its reply.
    ///
    /// # Errors
    ///
    /// [`Error::Remote`] if the child answered with an error; how the child
    /// ended if it did before answering ([`Error::Signaled`],
    /// [`Error::Panicked`], ..., or [`Error::Disconnected`] if it returned);
    /// [`Error::Codec`] if the request or the reply does not serialize.
    pub fn call(&self, request: &Q) -> Result<P> {
        let id = self.request(request)?;
        self.reply(id)
    }

    /// Sends `request` and waits at most `timeout` for its reply; a reply
    /// that comes later is dropped.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`], or as [`call`](Self::call).
    pub fn call_timeout(&self, request: &Q, timeout: Duration) -> Result<P> {
        let id = self.request(request)?;
        let reply = self.reply_timeout(id, timeout);
        if matches!(reply, Err(Error::Timeout)) {
            self.abandon(id.0);
        }
        reply
    }

    /// Sends `request` without waiting: its reply is had with
    /// [`reply`](Self::reply).
    ///
    /// # Errors
    ///
    /// [`Error::Disconnected`] if the child is gone, [`Error::Codec`] if
    /// the request does not serialize.
    pub fn request(&self, request: &Q) -> Result<RequestId> {
        let id = self.next_key();
        self.send_data(&Request { id, body: request })?;
        Ok(RequestId(id))
    }

    /// Waits for the reply to the request `id`.
    ///
    /// # Errors
    ///
    /// As [`call`](Self::call).
    pub fn reply(&self, id: RequestId) -> Result<P> {
        self.reply_until(id, Deadline::Never)
    }

    /// Waits at most `timeout` for the reply to the request `id`. On
    /// [`Error::Timeout`] the request stays in flight: ask again later.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`], or as [`call`](Self::call).
    pub fn reply_timeout(&self, id: RequestId, timeout: Duration) -> Result<P> {
        self.reply_until(id, Deadline::after(timeout))
    }

    fn reply_until(&self, id: RequestId, deadline: Deadline) -> Result<P> {
        let body = self.await_keyed(id.0, deadline)?;
        let reply: Reply<P> = decode(&body)?;
        reply.body.map_err(|message| Error::Remote { message })
    }
}

impl<Q: DeserializeOwned, P: Serialize> Channel<Reply<P>, Request<Q>> {
    /// Answers every request with `f`, until the parent closes its end.
    ///
    /// # Errors
    ///
    /// [`Error::Codec`] if a request does not decode or a reply does not
    /// encode; [`Error::Disconnected`] if the parent went away while a
    /// reply was being sent.
    pub fn serve(&self, mut f: impl FnMut(Q) -> P) -> Result<()> {
        self.try_serve(|body| Ok::<_, std::convert::Infallible>(f(body)))
    }

    /// Answers every request with `f`, until the parent closes its end; an
    /// `Err` is sent back as the reply's error, and serving goes on.
    ///
    /// # Errors
    ///
    /// As [`serve`](Self::serve).
    pub fn try_serve<E: fmt::Display>(&self, mut f: impl FnMut(Q) -> Result<P, E>) -> Result<()> {
        loop {
            let request = match self.recv() {
                Ok(request) => request,
                Err(Error::Disconnected) => return Ok(()),
                Err(err) => return Err(err),
            };
            let Request { id, body } = request;
            let reply = Reply {
                id,
                body: f(body).map_err(|err| err.to_string()),
            };
            self.send(&reply)?;
        }
    }
}
