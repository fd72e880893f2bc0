//! The parent's end: a child process, its channel and its result.

use std::collections::VecDeque;
use std::fmt;
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use nix::unistd::Pid;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::call::{Returns, Types};
use crate::channel::{Iter, batch, optional};
use crate::child::{Failure, PanicReport};
use crate::conn::{Conn, Deadline, Step, decode, poll_until, tag};
use crate::error::{Error, Result};
use crate::spawn::Spawned;

/// How long a receive that saw the channel close waits for the child's exit
/// status, to report how it ended rather than a bare `Disconnected`.
const EXIT_GRACE: Duration = Duration::from_millis(200);

/// A running (or finished) child process started by pproc, with the
/// parent's end of its channel.
///
/// `R` is the function's return type; `S` is what the parent sends and `V`
/// what it receives, the mirror of the child's [`Channel<V, S>`](crate::Channel).
/// Functions without a channel have `S = V = ()`. `K` is how the call
/// delivers its values to an exchange ([`Returns`](crate::Returns) or
/// [`Streams`](crate::Streams)), which `#[parallel]` picks.
///
/// A `Handle` owns its child: dropping it kills the child if it is still
/// running and reaps it, so no zombie and no descriptor is left behind.
///
/// # Examples
///
/// ```
/// use pproc::{parallel, Handle};
///
/// #[parallel]
/// fn add(a: i64, b: i64) -> i64 {
///     a + b
/// }
///
/// # fn main() -> pproc::Result<()> {
/// let h: Handle<i64> = add::start(2, 3)?;
/// assert_eq!(h.join()?, 5);
/// # Ok(())
/// # }
/// ```
pub struct Handle<R, S = (), V = (), K = Returns> {
    inner: Mutex<Inner>,
    name: String,
    pid: Pid,
    _types: Types<R, S, V, K>,
}

#[derive(Debug)]
struct Inner {
    conn: Conn,
    child: Child,
    outcome: Option<Outcome>,
    /// `DATA` frames read while waiting for the result, not yet received.
    pending: VecDeque<Vec<u8>>,
}

/// How the child said it ended.
#[derive(Debug)]
enum Outcome {
    Value(Vec<u8>),
    Panic(PanicReport),
    Fail(Failure),
}

impl Outcome {
    fn from_frame(tag: u8, body: &[u8]) -> Result<Self> {
        match tag {
            tag::RESULT => Ok(Self::Value(body.to_vec())),
            tag::PANIC => decode(body).map(Self::Panic),
            tag::FAIL => decode(body).map(Self::Fail),
            other => Err(Error::codec(format_args!(
                "unexpected frame tag {other} from the child"
            ))),
        }
    }

    /// The error this outcome stands for, if it is one.
    fn error(&self) -> Option<Error> {
        match self {
            Self::Value(_) => None,
            Self::Panic(report) => Some(Error::Panicked {
                message: report.message.clone(),
                location: report.location.clone(),
            }),
            Self::Fail(failure) => Some(failure.clone().into()),
        }
    }
}

/// Where a reusable worker's current call stands.
pub(crate) enum Turn {
    /// Still running.
    Running,
    /// Done: its serialized result, or how it failed.
    Done(Result<Vec<u8>>),
    /// The worker is gone (killed, or its channel broke).
    Dead(Error),
}

/// What a child that streams values has for an exchange, without waiting.
pub(crate) enum Flow {
    /// The next value it sent, serialized.
    Value(Vec<u8>),
    /// Nothing yet.
    Idle,
    /// It is done sending: everything it sent was read.
    End,
}

/// How the child process ended.
#[derive(Clone, Copy, Debug)]
enum Status {
    Exited(i32),
    Signaled(i32),
}

impl From<Status> for Error {
    fn from(status: Status) -> Self {
        match status {
            Status::Exited(code) => Self::Exited { code },
            Status::Signaled(signal) => Self::Signaled { signal },
        }
    }
}

/// The process itself: waited for once, killed on drop if still running.
#[derive(Debug)]
struct Child {
    pid: Pid,
    pidfd: Option<OwnedFd>,
    status: Option<Status>,
}

impl Child {
    fn exit_fd(&self) -> Option<BorrowedFd<'_>> {
        if self.status.is_some() {
            return None;
        }
        self.pidfd.as_ref().map(AsFd::as_fd)
    }

    /// Waits for the process to exit and reaps it.
    fn wait(&mut self, deadline: Deadline) -> Result<Status> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        if let Some(pidfd) = &self.pidfd {
            let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
            if !poll_until(&mut fds, deadline)? {
                return Err(Error::Timeout);
            }
        }
        let mut pause = Duration::from_micros(100);
        loop {
            let flags = if self.pidfd.is_some() {
                WaitPidFlag::WEXITED
            } else {
                WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG
            };
            match waitid(Id::Pid(self.pid), flags) {
                Ok(WaitStatus::Exited(_, code)) => {
                    return Ok(*self.status.insert(Status::Exited(code)));
                }
                Ok(WaitStatus::Signaled(_, signal, _)) => {
                    return Ok(*self.status.insert(Status::Signaled(signal as i32)));
                }
                Err(Errno::EINTR) => continue,
                Err(err) => return Err(err.into()),
                Ok(_) => {}
            }
            // No pidfd (kernels before 5.3): poll with a growing pause.
            let now = Instant::now();
            match deadline {
                Deadline::Now => return Err(Error::Timeout),
                Deadline::At(at) if now >= at => return Err(Error::Timeout),
                Deadline::At(at) => std::thread::sleep(pause.min(at - now)),
                Deadline::Never => std::thread::sleep(pause),
            }
            pause = (pause * 2).min(Duration::from_millis(10));
        }
    }

    fn kill(&self) -> Result<()> {
        if self.status.is_some() {
            return Ok(());
        }
        // The process is not reaped yet, so its pid cannot have been reused.
        match kill(self.pid, Signal::SIGKILL) {
            Ok(()) | Err(Errno::ESRCH) => Ok(()),
            Err(err) => Err(err.into()),
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.kill();
            let _ = self.wait(Deadline::Never);
        }
    }
}

impl Inner {
    /// Reads until the child's outcome is known or it is gone, keeping
    /// `DATA` frames when `keep` is set; then reaps the child.
    fn settle(&mut self, deadline: Deadline, keep: bool) -> Result<Status> {
        let Self {
            conn,
            child,
            outcome,
            pending,
        } = self;
        while outcome.is_none() {
            let step = conn.recv_data(
                deadline,
                child.exit_fd(),
                |body| Ok(keep.then(|| body.to_vec())),
                |tag, body| {
                    *outcome = Some(Outcome::from_frame(tag, body)?);
                    Ok(())
                },
            )?;
            match step {
                Step::Data(Some(bytes)) => pending.push_back(bytes),
                Step::Data(None) => {}
                Step::Closed | Step::Exited => break,
                Step::Timeout if outcome.is_some() => break,
                Step::Timeout => return Err(Error::Timeout),
            }
        }
        child.wait(deadline)
    }

    fn result<R: DeserializeOwned>(&self, status: Status) -> Result<R> {
        decode(self.result_bytes(status)?)
    }

    /// The serialized result, or how the child failed.
    fn result_bytes(&self, status: Status) -> Result<&[u8]> {
        match &self.outcome {
            Some(Outcome::Value(bytes)) => Ok(bytes),
            Some(other) => Err(other.error().unwrap_or(Error::Disconnected)),
            None => Err(status.into()),
        }
    }

    fn recv<V: DeserializeOwned>(&mut self, deadline: Deadline) -> Result<V> {
        if let Some(bytes) = self.pending.pop_front() {
            return decode(&bytes);
        }
        let Self {
            conn,
            child,
            outcome,
            ..
        } = self;
        let step = conn.recv_data(deadline, child.exit_fd(), decode::<V>, |tag, body| {
            *outcome = Some(Outcome::from_frame(tag, body)?);
            Ok(())
        })?;
        match step {
            Step::Data(value) => Ok(value),
            Step::Timeout => Err(Error::Timeout),
            Step::Closed | Step::Exited => Err(self.end_error(deadline)),
        }
    }

    /// The error for a receive on a channel the child is done with: how the
    /// child ended, or `Disconnected` if it returned normally.
    fn end_error(&mut self, deadline: Deadline) -> Error {
        if let Some(outcome) = &self.outcome {
            return outcome.error().unwrap_or(Error::Disconnected);
        }
        let grace = Deadline::after(EXIT_GRACE);
        let deadline = match (deadline, grace) {
            (Deadline::At(at), Deadline::At(g)) if at < g => deadline,
            (Deadline::Now, _) => Deadline::Now,
            _ => grace,
        };
        match self.child.wait(deadline) {
            Ok(status) => status.into(),
            Err(Error::Timeout) => Error::Disconnected,
            Err(err) => err,
        }
    }
}

impl<R, S, V, K> Handle<R, S, V, K> {
    pub(crate) fn new(name: String, conn: Conn, spawned: Spawned) -> Self {
        Self {
            name,
            pid: spawned.pid,
            inner: Mutex::new(Inner {
                conn,
                child: Child {
                    pid: spawned.pid,
                    pidfd: spawned.pidfd,
                    status: None,
                },
                outcome: None,
                pending: VecDeque::new(),
            }),
            _types: PhantomData,
        }
    }

    /// The same handle with other type parameters: an exchange holds
    /// handles of many functions, and decodes each with its own types.
    pub(crate) fn cast<R2, S2, V2, K2>(self) -> Handle<R2, S2, V2, K2> {
        Handle {
            inner: self.inner,
            name: self.name,
            pid: self.pid,
            _types: PhantomData,
        }
    }

    /// Without blocking: the serialized result once the child has ended,
    /// `Err(Timeout)` while it runs.
    pub(crate) fn poll_result(&mut self) -> Result<Vec<u8>> {
        let inner = self.inner_mut();
        let status = inner.settle(Deadline::Now, false)?;
        inner.result_bytes(status).map(<[u8]>::to_vec)
    }

    /// Without blocking: the next value the child sent, or whether it is
    /// done sending.
    pub(crate) fn poll_flow(&mut self) -> Result<Flow> {
        let inner = self.inner_mut();
        if let Some(bytes) = inner.pending.pop_front() {
            return Ok(Flow::Value(bytes));
        }
        let Inner {
            conn,
            child,
            outcome,
            ..
        } = inner;
        let step = conn.recv_data(
            Deadline::Now,
            child.exit_fd(),
            |body| Ok(body.to_vec()),
            |tag, body| {
                *outcome = Some(Outcome::from_frame(tag, body)?);
                Ok(())
            },
        )?;
        Ok(match step {
            Step::Data(bytes) => Flow::Value(bytes),
            Step::Timeout => Flow::Idle,
            Step::Closed | Step::Exited => Flow::End,
        })
    }

    /// Shuts the channel down both ways: the child's sends and receives
    /// fail with `Disconnected` from now on, and a reusable worker exits.
    pub(crate) fn close_channel(&mut self) {
        let inner = self.inner_mut();
        // Only fails if the socket is not connected any more: closed is
        // what we want.
        let _ = nix::sys::socket::shutdown(inner.conn.raw_fd(), nix::sys::socket::Shutdown::Both);
    }

    /// Waits for the process to exit, and reaps it.
    pub(crate) fn wait_exit(&mut self, deadline: Deadline) -> Result<()> {
        self.inner_mut().child.wait(deadline).map(drop)
    }

    /// Sends a reusable worker its next call.
    pub(crate) fn send_call(&mut self, name: &str, args: &[u8]) -> Result<()> {
        self.inner_mut()
            .conn
            .send_bytes(tag::CALL, &crate::child::join_call(name, args))
    }

    /// Without blocking: where a reusable worker's current call stands.
    /// Values it sent on its channel are pushed to `values`.
    pub(crate) fn poll_turn(&mut self, values: &mut Vec<Vec<u8>>) -> Turn {
        let Inner {
            conn,
            child,
            outcome,
            ..
        } = self.inner_mut();
        let step = loop {
            let step = conn.recv_data(
                Deadline::Now,
                child.exit_fd(),
                |body| {
                    values.push(body.to_vec());
                    Ok(())
                },
                |tag, body| {
                    *outcome = Some(Outcome::from_frame(tag, body)?);
                    Ok(())
                },
            );
            if !matches!(step, Ok(Step::Data(()))) {
                break step;
            }
        };
        if let Some(done) = outcome.take() {
            return Turn::Done(match done {
                Outcome::Value(bytes) => Ok(bytes),
                other => Err(other.error().unwrap_or(Error::Disconnected)),
            });
        }
        match step {
            Ok(Step::Closed | Step::Exited) => {
                // It is gone or going: a dead worker's channel closes as
                // it exits.
                Turn::Dead(
                    child
                        .wait(Deadline::Never)
                        .map_or_else(|err| err, Error::from),
                )
            }
            Ok(_) => Turn::Running,
            Err(err) => Turn::Dead(err),
        }
    }

    /// Whether nothing more can be read from the socket: the result (or
    /// the end of the stream) is in, only the exit remains to be seen.
    pub(crate) fn is_drained(&mut self) -> bool {
        let inner = self.inner_mut();
        inner.outcome.is_some() || inner.conn.is_eof()
    }

    /// The descriptors that become readable when the child has something to
    /// say (its socket) and when it exits (its pidfd, where there is one).
    pub(crate) fn watch_fds(&mut self) -> (RawFd, Option<RawFd>) {
        let inner = self.inner_mut();
        let socket = inner.conn.raw_fd();
        (socket, inner.child.exit_fd().map(|fd| fd.as_raw_fd()))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn inner_mut(&mut self) -> &mut Inner {
        self.inner.get_mut().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn send_args(&self, args: &[u8]) -> Result<()> {
        match self.lock().conn.send_bytes(tag::ARGS, args) {
            // The child refused to start (and said why): `join` reports it.
            Err(Error::Disconnected) | Ok(()) => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// The child's process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.pid.as_raw().cast_unsigned()
    }

    /// The registered name of the function the child runs.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the child process has exited. Never blocks.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the process could not be waited for.
    pub fn is_finished(&self) -> Result<bool> {
        match self.lock().child.wait(Deadline::Now) {
            Ok(_) => Ok(true),
            Err(Error::Timeout) => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// Kills the child with `SIGKILL`. A later [`join`](Self::join) returns
    /// [`Error::Signaled`], unless the child had already sent its result.
    /// Killing a child that has exited does nothing.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the signal could not be sent.
    pub fn kill(&self) -> Result<()> {
        self.lock().child.kill()
    }
}

impl<R: DeserializeOwned, S, V, K> Handle<R, S, V, K> {
    /// Waits for the child to finish and returns its result. Values the
    /// child sent that were not received are dropped.
    ///
    /// # Errors
    ///
    /// [`Error::Panicked`] if the child panicked, [`Error::Signaled`] if it
    /// was killed, [`Error::Exited`] if it exited without a result,
    /// [`Error::Codec`] if the result does not decode, and the errors of
    /// starting a child ([`Error::Unregistered`], [`Error::VersionSkew`]).
    pub fn join(mut self) -> Result<R> {
        let inner = self.inner_mut();
        let status = inner.settle(Deadline::Never, false)?;
        inner.result(status)
    }

    /// Waits at most `timeout` for the child to finish and returns its
    /// result. On [`Error::Timeout`] the child keeps running and the handle
    /// stays usable: values it sent meanwhile can still be received.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`], or as [`join`](Self::join).
    pub fn join_timeout(&mut self, timeout: Duration) -> Result<R> {
        let inner = self.inner_mut();
        let status = inner.settle(Deadline::after(timeout), true)?;
        inner.result(status)
    }
}

impl<R, S: Serialize, V, K> Handle<R, S, V, K> {
    /// Sends a value to the child.
    ///
    /// # Errors
    ///
    /// [`Error::Disconnected`] if the child is gone, [`Error::Codec`] if the
    /// value does not serialize.
    pub fn send(&self, value: &S) -> Result<()> {
        self.lock().conn.send_value(tag::DATA, value)
    }
}

impl<R, S, V: DeserializeOwned, K> Handle<R, S, V, K> {
    /// Waits for the next value from the child.
    ///
    /// # Errors
    ///
    /// Once the child is done and everything it sent was received:
    /// [`Error::Disconnected`] if it returned normally, otherwise how it
    /// ended ([`Error::Panicked`], [`Error::Signaled`], [`Error::Exited`]).
    /// [`Error::Codec`] for a value that does not decode as `V`.
    pub fn recv(&self) -> Result<V> {
        self.lock().recv(Deadline::Never)
    }

    /// Waits at most `timeout` for the next value.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] if nothing arrived in time, otherwise as
    /// [`recv`](Self::recv).
    pub fn recv_timeout(&self, timeout: Duration) -> Result<V> {
        self.lock().recv(Deadline::after(timeout))
    }

    /// Returns the next value if one has arrived, without waiting.
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv).
    pub fn try_recv(&self) -> Result<Option<V>> {
        optional(self.lock().recv(Deadline::Now))
    }

    /// Waits for a first value, then up to `timeout` more to fill a batch
    /// of at most `max` values (concurrence's `receive_batch`).
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv) for the first value; an error met after it
    /// ends the batch and is returned by the next receive.
    pub fn recv_batch(&self, max: usize, timeout: Duration) -> Result<Vec<V>> {
        let mut inner = self.lock();
        let mut deferred = None;
        let out = batch(
            max,
            timeout,
            |deadline| inner.recv(deadline),
            |err| {
                deferred = Some(err);
            },
        );
        if let Some(err) = deferred {
            inner.conn.defer(err);
        }
        out
    }

    /// An iterator over the values the child sends. It ends when the child
    /// is done sending; an abnormal end (a panic, a kill) is yielded as a
    /// last `Err`.
    #[must_use]
    pub fn iter(&self) -> Iter<'_, V> {
        Iter::new(move || self.recv())
    }
}

impl<'a, R, S, V: DeserializeOwned, K> IntoIterator for &'a Handle<R, S, V, K> {
    type Item = Result<V>;
    type IntoIter = Iter<'a, V>;

    fn into_iter(self) -> Iter<'a, V> {
        self.iter()
    }
}

impl<R, S, V, K> AsRawFd for Handle<R, S, V, K> {
    /// The socket under the channel, for polling it in an event loop of
    /// your own. Reading or writing it directly breaks the framing.
    fn as_raw_fd(&self) -> RawFd {
        self.lock().conn.raw_fd()
    }
}

impl<R, S, V, K> fmt::Debug for Handle<R, S, V, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("name", &self.name)
            .field("pid", &self.pid.as_raw())
            .finish_non_exhaustive()
    }
}
