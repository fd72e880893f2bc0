//! The child's end of the channel, and the receive family shared with
//! [`Handle`](crate::Handle).

use std::fmt;
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::child::lock;
use crate::conn::{Conn, Deadline, Step, decode, remote, tag};
use crate::error::{Error, Result};

/// The child's end of the channel to its parent, as seen by the child: it
/// sends `S` and receives `V`.
///
/// A `#[parallel]` function whose first parameter is a `Channel` is started
/// with its end of a fresh channel; the parent holds the mirror end on its
/// [`Handle`](crate::Handle), which sends `V` and receives `S`. Both ends may
/// send and receive at any time, in any sizes, without deadlock.
///
/// # Examples
///
/// ```
/// use pproc::{parallel, Channel};
///
/// #[parallel]
/// fn echo_upper(ch: Channel<String, String>) {
///     while let Ok(line) = ch.recv() {
///         if ch.send(&line.to_uppercase()).is_err() {
///             break;
///         }
///     }
/// }
///
/// # fn main() -> pproc::Result<()> {
/// let h = echo_upper::start()?;
/// h.send(&"hello".to_string())?;
/// assert_eq!(h.recv()?, "HELLO");
/// # Ok(())
/// # }
/// ```
pub struct Channel<S = (), V = ()> {
    conn: Arc<Mutex<Conn>>,
    _types: PhantomData<fn(S) -> V>,
}

impl<S, V> Channel<S, V> {
    pub(crate) fn new(conn: Arc<Mutex<Conn>>) -> Self {
        Self {
            conn,
            _types: PhantomData,
        }
    }
}

impl<S: Serialize, V> Channel<S, V> {
    /// Sends a value to the parent.
    ///
    /// # Errors
    ///
    /// [`Error::Disconnected`] if the parent closed its end, [`Error::Codec`]
    /// if the value does not serialize.
    pub fn send(&self, value: &S) -> Result<()> {
        lock(&self.conn).send_value(tag::DATA, value)
    }
}

impl<S, V> Channel<S, V> {
    /// Sends an error in place of a value (concurrence's
    /// `send_exception`): the parent's next receive returns it as
    /// [`Error::Remote`] with this message, and the channel goes on. Unlike
    /// a panic, it does not end the child.
    ///
    /// # Examples
    ///
    /// ```
    /// use pproc::{parallel, Channel, Error};
    ///
    /// #[parallel]
    /// fn parse_all(ch: Channel<u32>, words: Vec<String>) {
    ///     for word in words {
    ///         let sent = match word.parse() {
    ///             Ok(n) => ch.send(&n),
    ///             Err(err) => ch.send_error(format_args!("{word:?}: {err}")),
    ///         };
    ///         sent.unwrap();
    ///     }
    /// }
    ///
    /// # fn main() -> pproc::Result<()> {
    /// let h = parse_all::start(vec!["1".into(), "two".into(), "3".into()])?;
    /// assert_eq!(h.recv()?, 1);
    /// match h.recv() {
    ///     Err(Error::Remote { message }) => assert!(message.starts_with("\"two\": invalid digit")),
    ///     other => panic!("unexpected {other:?}"),
    /// }
    /// assert_eq!(h.recv()?, 3);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Disconnected`] if the parent closed its end.
    pub fn send_error(&self, error: impl fmt::Display) -> Result<()> {
        lock(&self.conn).send_value(tag::ERROR, &error.to_string())
    }
}

impl<S, V: DeserializeOwned> Channel<S, V> {
    fn recv_until(&self, deadline: Deadline) -> Result<V> {
        let mut conn = lock(&self.conn);
        let step = conn.recv_data(deadline, None, decode::<V>, |tag, body| {
            Err(if tag == tag::ERROR {
                remote(body)
            } else {
                Error::codec(format_args!("unexpected frame tag {tag} from the parent"))
            })
        })?;
        match step {
            Step::Data(value) => Ok(value),
            Step::Closed | Step::Exited => Err(Error::Disconnected),
            Step::Timeout => Err(Error::Timeout),
        }
    }

    /// Waits for the next value from the parent.
    ///
    /// # Errors
    ///
    /// [`Error::Disconnected`] once the parent has closed its end and every
    /// value it sent was received; [`Error::Codec`] for a value that does
    /// not decode as `V`; [`Error::Remote`] for an error the parent sent in
    /// place of a value.
    pub fn recv(&self) -> Result<V> {
        self.recv_until(Deadline::Never)
    }

    /// Waits at most `timeout` for the next value.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] if nothing arrived in time, otherwise as
    /// [`recv`](Self::recv).
    pub fn recv_timeout(&self, timeout: Duration) -> Result<V> {
        self.recv_until(Deadline::after(timeout))
    }

    /// Returns the next value if one has arrived, without waiting.
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv).
    pub fn try_recv(&self) -> Result<Option<V>> {
        optional(self.recv_until(Deadline::Now))
    }

    /// Waits for a first value, then up to `timeout` more to fill a batch
    /// of at most `max` values (concurrence's `receive_batch`).
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv) for the first value; an error met after it
    /// ends the batch and is returned by the next receive.
    pub fn recv_batch(&self, max: usize, timeout: Duration) -> Result<Vec<V>> {
        batch(
            max,
            timeout,
            |deadline| self.recv_until(deadline),
            |err| {
                lock(&self.conn).defer(err);
            },
        )
    }

    /// An iterator over received values that ends when the parent closes
    /// its end, or after yielding an error.
    #[must_use]
    pub fn iter(&self) -> Iter<'_, V> {
        Iter::new(move || self.recv())
    }
}

impl<S, V> AsRawFd for Channel<S, V> {
    /// The socket under the channel, for polling it in an event loop of
    /// your own. Reading or writing it directly breaks the framing.
    fn as_raw_fd(&self) -> RawFd {
        lock(&self.conn).raw_fd()
    }
}

impl<S, V> fmt::Debug for Channel<S, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("send", &std::any::type_name::<S>())
            .field("recv", &std::any::type_name::<V>())
            .finish_non_exhaustive()
    }
}

impl<'a, S, V: DeserializeOwned> IntoIterator for &'a Channel<S, V> {
    type Item = Result<V>;
    type IntoIter = Iter<'a, V>;

    fn into_iter(self) -> Iter<'a, V> {
        self.iter()
    }
}

/// `Ok(None)` for a timeout.
pub(crate) fn optional<V>(result: Result<V>) -> Result<Option<V>> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(Error::Timeout) => Ok(None),
        Err(err) => Err(err),
    }
}

/// concurrence's `receive_batch`: the first value with no deadline, then up
/// to `timeout` to fill the batch. An error after the first value ends the
/// batch and goes to `defer`.
pub(crate) fn batch<V>(
    max: usize,
    timeout: Duration,
    mut next: impl FnMut(Deadline) -> Result<V>,
    defer: impl FnOnce(Error),
) -> Result<Vec<V>> {
    let mut out = Vec::new();
    if max == 0 {
        return Ok(out);
    }
    out.push(next(Deadline::Never)?);
    let deadline = Deadline::after(timeout);
    while out.len() < max {
        match next(deadline) {
            Ok(value) => out.push(value),
            Err(Error::Timeout) => break,
            Err(err) => {
                defer(err);
                break;
            }
        }
    }
    Ok(out)
}

/// An iterator over the values received on a channel or a handle.
///
/// It ends when the other side is done sending ([`Error::Disconnected`]),
/// and after yielding any other error but [`Error::Remote`], an error sent in
/// place of a value, after which it goes on.
pub struct Iter<'a, V> {
    next: Box<dyn FnMut() -> Result<V> + 'a>,
    done: bool,
}

impl<'a, V> Iter<'a, V> {
    pub(crate) fn new(next: impl FnMut() -> Result<V> + 'a) -> Self {
        Self {
            next: Box::new(next),
            done: false,
        }
    }
}

impl<V> Iterator for Iter<'_, V> {
    type Item = Result<V>;

    fn next(&mut self) -> Option<Result<V>> {
        if self.done {
            return None;
        }
        match (self.next)() {
            Ok(value) => Some(Ok(value)),
            Err(Error::Disconnected) => {
                self.done = true;
                None
            }
            // An error sent in place of a value: the stream goes on.
            Err(err @ Error::Remote { .. }) => Some(Err(err)),
            Err(err) => {
                self.done = true;
                Some(Err(err))
            }
        }
    }
}

impl<V> std::iter::FusedIterator for Iter<'_, V> {}

impl<V> fmt::Debug for Iter<'_, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Iter")
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}
