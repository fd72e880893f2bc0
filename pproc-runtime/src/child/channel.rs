//! The child's end of the channel, and the receive family shared with
//! [`Handle`](crate::Handle).

use std::fmt;
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, TryLockError};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::lock::lock;
use crate::wire::codec::{decode, locator};
use crate::wire::conn::{Next, SharedConn};
use crate::wire::frame::{remote, tag};
use crate::wire::outbox::{Outbox, Pushed};
use crate::wire::recv::{Iter, batch, optional};
use crate::wire::rpc::{Reply, Request};
use crate::wire::wait::Deadline;

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
    conn: SharedConn,
    /// What was sent and not written yet: a send only takes its lock.
    out: Arc<Outbox>,
    _types: PhantomData<fn(S) -> V>,
}

impl<S, V> Channel<S, V> {
    pub(crate) fn new(conn: SharedConn) -> Self {
        let out = lock(&conn).outbox();
        Self {
            conn,
            out,
            _types: PhantomData,
        }
    }

    /// Sends a `DATA` or `ERROR` frame holding `value`: into the outbox
    /// when it takes it, otherwise through the connection.
    fn send_frame<T: Serialize + ?Sized>(&self, tag: u8, value: &T) -> Result<()> {
        match self.out.push(tag, value)? {
            Pushed::Held => Ok(()),
            Pushed::Full => lock(&self.conn).flush(),
            Pushed::Refused => lock(&self.conn).send_value(tag, value),
        }
    }

    /// Writes out the values sent so far that still wait in the channel's
    /// buffer.
    ///
    /// Values are gathered into one write of up to 64 KiB, which goes out
    /// when it fills, when this end waits to receive, when the function
    /// returns or panics, and once the oldest value has waited
    /// [`DEFAULT_FLUSH_AFTER`](crate::DEFAULT_FLUSH_AFTER) (see
    /// [`set_flush_after`](Self::set_flush_after)). Flush before doing
    /// something that must not start until the parent can read them, such
    /// as waiting on the socket in an event loop of your own, or ending the
    /// process some other way than returning.
    ///
    /// # Examples
    ///
    /// ```
    /// use pproc::{parallel, Channel};
    ///
    /// #[parallel]
    /// fn report_then_exit(ch: Channel<u32>) {
    ///     ch.send(&7).unwrap();
    ///     ch.flush().unwrap();
    ///     std::process::exit(0);
    /// }
    ///
    /// # fn main() -> pproc::Result<()> {
    /// let h = report_then_exit::start()?;
    /// assert_eq!(h.recv()?, 7);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Disconnected`] if the parent closed its end. Once a write
    /// has failed, every later send and flush fails the same way.
    pub fn flush(&self) -> Result<()> {
        match self.conn.try_lock() {
            Ok(mut conn) => conn.flush(),
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner().flush(),
            // Another thread holds the connection: it reads as it waits, so
            // the parent is drained while this one waits for room.
            Err(TryLockError::WouldBlock) => self.out.flush_waiting(),
        }
    }

    /// Sets how long a value sent on this end may wait in its buffer
    /// before it is written out, however busy the sender is:
    /// [`DEFAULT_FLUSH_AFTER`](crate::DEFAULT_FLUSH_AFTER) unless set.
    /// [`Duration::ZERO`] writes every value at once, one write each;
    /// [`Duration::MAX`] leaves values waiting until the buffer fills, a
    /// receive waits, or a flush.
    pub fn set_flush_after(&self, after: Duration) {
        self.out.set_after(after);
    }
}

impl<S: Serialize, V> Channel<S, V> {
    /// Sends a value to the parent.
    ///
    /// The value may wait in the channel's buffer, with others, for a
    /// millisecond at most: see [`flush`](Self::flush). Values arrive in
    /// the order they were sent, and all of them before the function's
    /// result or its panic.
    ///
    /// # Errors
    ///
    /// [`Error::Disconnected`] if the parent closed its end (possibly only
    /// at a later send, for a value that waited), [`Error::Codec`] if the
    /// value does not serialize.
    pub fn send(&self, value: &S) -> Result<()> {
        self.send_frame(tag::DATA, value)
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
        self.send_frame(tag::ERROR, &error.to_string())
    }
}

impl<S, V: DeserializeOwned> Channel<S, V> {
    fn recv_until(&self, deadline: Deadline) -> Result<V> {
        let mut conn = lock(&self.conn);
        conn.read_runs_as(locator::<V>());
        let next = conn.next(deadline, None, |tag, body| match tag {
            tag::DATA => decode::<V>(body),
            tag::ERROR => Err(remote(body)),
            other => Err(Error::codec(format_args!(
                "unexpected frame tag {other} from the parent"
            ))),
        })?;
        match next {
            Next::Frame(value) => value,
            Next::Closed | Next::Exited => Err(Error::Disconnected),
            Next::Timeout => Err(Error::Timeout),
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
    ///
    /// The values sent before are written out first, as far as the
    /// socket takes them now: [`flush`](Self::flush) to be sure of all.
    fn as_raw_fd(&self) -> RawFd {
        let conn = lock(&self.conn);
        self.out.flush_now();
        conn.raw_fd()
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
