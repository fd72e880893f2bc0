//! Request and reply from the parent's side: several requests in flight
//! at once, from one thread or many, each reply handed to its own request.

use std::collections::{HashMap, HashSet};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use nix::poll::{PollFd, PollFlags};

use super::Handle;
use crate::error::{Error, Result};
use crate::lock::wait_timeout;
use crate::wire::codec::{decode, owned_body};
use crate::wire::rpc::{Reply, Request, RequestId, reply_id};
use crate::wire::wait::{Deadline, poll_until};

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

/// Request and reply with a serving child (concurrence's `Message.call`).
///
/// The child takes a `Channel<Reply<P>, Request<Q>>` and answers with
/// [`Channel::serve`](crate::Channel::serve) (or by hand, [`Request::reply`]); the parent's handle
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

/// The reading that request and reply share between threads.
impl<R, S, V, K> Handle<R, S, V, K> {
    /// Waits for the reply whose key is `key`, filing the replies to other
    /// requests in the book for the threads that wait for them.
    ///
    /// One waiting thread at a time reads the socket, and polls it without
    /// the lock, so that other threads can send meanwhile; the others wait
    /// on `news`, which the reader signals when it files a reply or stops
    /// reading (then one of them takes over).
    pub(crate) fn await_keyed(&self, key: u64, deadline: Deadline) -> Result<Vec<u8>> {
        let mut inner = self.lock();
        loop {
            if let Some(body) = inner.book.take(key) {
                return Ok(body);
            }
            if inner.book.reading {
                // Someone else reads: wait for news.
                let wait = match deadline {
                    Deadline::Never => Duration::MAX,
                    Deadline::Now => return Err(Error::Timeout),
                    Deadline::At(at) => match at.checked_duration_since(Instant::now()) {
                        Some(left) => left,
                        None => return Err(Error::Timeout),
                    },
                };
                inner = wait_timeout(&self.news, inner, wait);
                drop(self.take_ahead(&mut inner));
                continue;
            }
            // Read what is there, without waiting.
            let mut filed = false;
            let ended = loop {
                match inner.recv_via(Deadline::Now, |body| Ok(owned_body(body))) {
                    Ok(body) => {
                        let id = reply_id(&body)?;
                        if id == key {
                            if filed {
                                self.news.notify_all();
                            }
                            return Ok(body);
                        }
                        inner.book.file(id, body);
                        filed = true;
                    }
                    // Nothing more to read; if the child is gone, how it
                    // ended (its deadline's timeout among the ways).
                    Err(Error::Timeout) if inner.child.status.is_some() || inner.conn.is_eof() => {
                        break Some(inner.end_error(deadline));
                    }
                    Err(Error::Timeout) => break None,
                    // Closed: how the child ended, once its status is in.
                    Err(Error::Disconnected) => break Some(inner.end_error(deadline)),
                    Err(err) => break Some(err),
                }
            };
            if filed {
                self.news.notify_all();
            }
            if let Some(err) = ended {
                return Err(err);
            }
            if deadline.passed() {
                return Err(Error::Timeout);
            }
            // Wait for the socket without the lock. Once the child is
            // reaped its pidfd is not polled: it would stay readable.
            inner.book.reading = true;
            let watch_exit = inner.child.status.is_none();
            drop(inner);
            let mut fds = vec![PollFd::new(self.socket.as_fd(), PollFlags::POLLIN)];
            if watch_exit && let Some(pidfd) = self.pidfd() {
                fds.push(PollFd::new(pidfd, PollFlags::POLLIN));
            }
            let polled = poll_until(&mut fds, deadline);
            inner = self.lock();
            inner.book.reading = false;
            // Another waiter may take over the reading.
            self.news.notify_all();
            if !polled? {
                return Err(Error::Timeout);
            }
        }
    }

    /// Forgets a request: its reply, if it comes, is dropped.
    pub(crate) fn abandon(&self, key: u64) {
        self.lock().book.abandon(key);
    }

    /// A fresh request id.
    pub(crate) fn next_key(&self) -> u64 {
        self.lock().book.next_key()
    }
}
