//! Reading a child's channel from the parent's side: one classifier of the
//! frames a child sends, and on top of it the result, the receive family,
//! and the readers that collectors poll without blocking.

use std::collections::VecDeque;
use std::time::Duration;

use serde::de::DeserializeOwned;

use super::Handle;
use super::rpc::Book;
use crate::error::{Error, Result};
use crate::process::capture::Capture;
use crate::process::child::{Child, Status};
use crate::process::limits::{Limits, status_error};
use crate::wire::codec::{self, decode, locator, owned_body};
use crate::wire::conn::{Conn, Next};
use crate::wire::frame::{PanicReport, Refusal, push_call, remote, tag};
use crate::wire::log;
use crate::wire::shm::Payload;
use crate::wire::wait::Deadline;

/// How long a receive that saw the channel close waits for the child's exit
/// status, to report how it ended rather than a bare `Disconnected`.
const EXIT_GRACE: Duration = Duration::from_millis(200);

/// What the handle keeps under its lock: the channel, the process, and
/// what was read of them.
#[derive(Debug)]
pub(super) struct Inner {
    /// The registered name of what the child runs, for the errors.
    name: String,
    pub(super) conn: Conn,
    pub(super) child: Child,
    outcome: Option<Outcome>,
    /// Values (`DATA` frames, or errors sent in their place) read while
    /// waiting for the result, not yet received.
    pub(super) pending: VecDeque<Result<Vec<u8>>>,
    /// The limits the child was started with, to tell why it died.
    pub(super) limits: Limits,
    /// Its standard output and error, when captured.
    pub(super) capture: Option<Capture>,
    /// Replies that arrived for requests other than the one awaited.
    pub(super) book: Book,
    /// A worker's result log, and the frames read from it, not yet taken.
    pub(super) log: Option<log::Reader>,
    logged: VecDeque<(u8, Vec<u8>)>,
    /// When it started, and whether its exit was traced.
    started: std::time::Instant,
    traced: bool,
}

/// `DATA` frames read ahead of the connection, older than everything the
/// handle's state holds: a receive takes the next one without the
/// state's lock, and whoever takes the lock puts what is left back in
/// front of the state's values first ([`put_back`](Self::put_back)).
#[derive(Debug, Default)]
pub(super) struct Ahead {
    /// The connection's received bytes, lent (see [`Conn::lend_ahead`]);
    /// `buf[pos..]` is not taken. Receives take the whole `DATA` frames at
    /// its head, and stop at anything else.
    buf: Vec<u8>,
    pos: usize,
    /// The longest frame the connection takes.
    max: usize,
}

impl Ahead {
    /// The length of the next frame, if it is a whole `DATA` frame.
    #[inline]
    fn whole(&self) -> Option<usize> {
        codec::whole_of(self.buf.get(self.pos..)?, tag::DATA, self.max)
    }

    /// The body of the next frame, taken, if it is a whole `DATA` frame.
    #[inline]
    pub(super) fn next(&mut self) -> Option<&[u8]> {
        let len = self.whole()?;
        let body = self.pos + codec::HEADER + 1;
        self.pos += codec::HEADER + len;
        Some(&self.buf[body..self.pos])
    }

    /// Takes the bytes `conn` received ahead, and the first value among
    /// them; `None`, with the bytes given back, if there is none there.
    pub(super) fn fill(&mut self, conn: &mut Conn) -> Option<&[u8]> {
        self.max = conn.max_frame();
        self.pos = conn.lend_ahead(&mut self.buf);
        if self.whole().is_none() {
            conn.unlend(&mut self.buf, self.pos);
            self.pos = 0;
            return None;
        }
        self.next()
    }

    /// Puts the frames not taken back where they came from: in front of
    /// what `conn` holds, or of `pending` where that holds values.
    pub(super) fn put_back(&mut self, conn: &mut Conn, pending: &mut VecDeque<Result<Vec<u8>>>) {
        if !pending.is_empty() {
            let mut bodies = Vec::new();
            while let Some(body) = self.next() {
                bodies.push(body.to_vec());
            }
            for body in bodies.into_iter().rev() {
                pending.push_front(Ok(body));
            }
        }
        conn.unlend(&mut self.buf, self.pos);
        self.pos = 0;
    }
}

/// How the child said its call ended.
#[derive(Debug)]
enum Outcome {
    Value(Payload),
    Panic(PanicReport),
    Refused(Refusal),
}

impl Outcome {
    fn from_frame(tag: u8, body: &[u8]) -> Result<Self> {
        match tag {
            tag::RESULT => Ok(Self::Value(Payload::of(body))),
            tag::PANIC => decode(body).map(Self::Panic),
            tag::FAIL => decode(body).map(Self::Refused),
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
                backtrace: report.backtrace.clone(),
            }),
            Self::Refused(refusal) => Some(refusal.clone().into()),
        }
    }

    /// The serialized value, or how the call failed.
    fn into_result(self) -> Result<Vec<u8>> {
        match self {
            Self::Value(kept) => Ok(kept.into_vec()),
            Self::Panic(report) => Err(report.into()),
            Self::Refused(refusal) => Err(refusal.into()),
        }
    }
}

/// What one read of a child's channel saw: every reader of the parent's
/// side (join, the receive family, request and reply, the collectors)
/// matches on this.
#[derive(Debug)]
pub(crate) enum Event<T> {
    /// A `DATA` frame, as the caller's reader read it.
    Data(T),
    /// An `ERROR` frame: an error the child sent in place of a value. The
    /// stream goes on after it.
    Sent(Error),
    /// The child said how its call ended (`RESULT`, `PANIC` or `FAIL`);
    /// the handle keeps it.
    Ended,
    /// The child closed the channel; everything it sent was read.
    Closed,
    /// The child exited; everything it sent was read.
    Exited,
    /// The deadline passed.
    Timeout,
}

impl Inner {
    pub(super) fn new(name: String, conn: Conn, child: Child) -> Self {
        Self {
            name,
            conn,
            child,
            outcome: None,
            pending: VecDeque::new(),
            limits: Limits::default(),
            capture: None,
            book: Book::default(),
            log: None,
            logged: VecDeque::new(),
            started: std::time::Instant::now(),
            traced: false,
        }
    }

    /// Reads the next frame, waiting until `deadline`, and classifies it;
    /// a `DATA` frame's body goes through `read`. A worker's `LOG` frame
    /// stands for the frames it announces, read in its place.
    pub(super) fn next_event<T>(
        &mut self,
        deadline: Deadline,
        read: impl FnOnce(&[u8]) -> Result<T>,
    ) -> Result<Event<T>> {
        let mut read = Some(read);
        loop {
            if let Some(event) = self.next_logged(&mut read)? {
                return Ok(event);
            }
            let Self {
                conn,
                child,
                outcome,
                log,
                logged,
                ..
            } = self;
            let next = conn.next(deadline, child.exit_fd(), |tag, body| {
                sort(tag, body, outcome, log, logged, &mut read)
            })?;
            match next {
                Next::Frame(Some(event)) => return event,
                Next::Frame(None) => {}
                Next::Closed => return Ok(Event::Closed),
                Next::Exited => return Ok(Event::Exited),
                Next::Timeout => return Ok(Event::Timeout),
            }
        }
    }

    /// The next event among the bytes read already, without a system
    /// call: `None` while no whole frame is there and the channel is open.
    fn buffered_event<T>(
        &mut self,
        read: impl FnOnce(&[u8]) -> Result<T>,
    ) -> Result<Option<Event<T>>> {
        let mut read = Some(read);
        loop {
            if let Some(event) = self.next_logged(&mut read)? {
                return Ok(Some(event));
            }
            let Self {
                conn,
                outcome,
                log,
                logged,
                ..
            } = self;
            match conn.with_frame(|tag, body| sort(tag, body, outcome, log, logged, &mut read))? {
                Some(Some(event)) => return event.map(Some),
                Some(None) => {}
                None if conn.is_eof() => return Ok(Some(Event::Closed)),
                None => return Ok(None),
            }
        }
    }

    /// The next of the frames a `LOG` frame announced, classified.
    fn next_logged<T>(
        &mut self,
        read: &mut Option<impl FnOnce(&[u8]) -> Result<T>>,
    ) -> Result<Option<Event<T>>> {
        if self.logged.is_empty() {
            return Ok(None);
        }
        // `read` is only taken with the event it reads, so it is here.
        let Some(read) = read.take() else {
            return Ok(None);
        };
        let Some((tag, body)) = self.logged.pop_front() else {
            return Ok(None);
        };
        classify(tag, &body, &mut self.outcome, read).map(Some)
    }

    /// Takes in what a worker that died had written to its log and not
    /// announced; whether there was any.
    pub(super) fn drain_log(&mut self) -> bool {
        let Some(log) = self.log.as_mut() else {
            return false;
        };
        let bytes = log.unannounced();
        // A frame is committed whole, so a cut one is not its doing: the
        // log ends there.
        split_log(&bytes, &mut self.logged).is_ok() && !self.logged.is_empty()
    }

    /// Reads until the child's outcome is known or it is gone, keeping
    /// what it sent meanwhile when `keep` is set; then reaps the child.
    pub(super) fn settle(&mut self, deadline: Deadline, keep: bool) -> Result<Status> {
        while self.outcome.is_none() {
            match self.next_event(deadline, |body| Ok(keep.then(|| owned_body(body))))? {
                Event::Data(Some(bytes)) => self.pending.push_back(Ok(bytes)),
                Event::Sent(error) if keep => self.pending.push_back(Err(error)),
                Event::Data(None) | Event::Sent(_) | Event::Ended => {}
                Event::Closed | Event::Exited => break,
                Event::Timeout => return Err(Error::Timeout),
            }
        }
        let status = self.child.wait(deadline)?;
        if !self.traced {
            self.traced = true;
            crate::trace::exited(
                &self.name,
                self.child.pid.as_raw().cast_unsigned(),
                status,
                self.started.elapsed(),
            );
        }
        Ok(status)
    }

    pub(super) fn result<R: DeserializeOwned>(&self, status: Status) -> Result<R> {
        let result = match &self.outcome {
            Some(Outcome::Value(kept)) => kept.decode(),
            _ => self.result_bytes(status).and_then(decode),
        };
        if let Err(error) = &result {
            crate::trace::failed(&self.name, self.child.pid.as_raw().cast_unsigned(), error);
        }
        result
    }

    /// The serialized result, or how the child failed.
    fn result_bytes(&self, status: Status) -> Result<&[u8]> {
        match &self.outcome {
            Some(Outcome::Value(kept)) => Ok(kept.bytes()),
            Some(other) => Err(other.error().unwrap_or(Error::Disconnected)),
            None => Err(self.status_error(status)),
        }
    }

    /// The error for a child that ended with `status` without a result:
    /// its deadline, a resource limit, or the bare status.
    fn status_error(&self, status: Status) -> Error {
        if let (Status::Lost, Some(host)) = (status, self.child.host()) {
            return Error::HostLost {
                host: host.to_owned(),
            };
        }
        status_error(status, self.child.expired(), &self.limits, &self.name)
    }

    pub(super) fn recv<V: DeserializeOwned>(&mut self, deadline: Deadline) -> Result<V> {
        self.conn.read_runs_as(locator::<V>());
        self.recv_via(deadline, decode::<V>)
    }

    /// The next value, read by `read`.
    pub(super) fn recv_via<V>(
        &mut self,
        deadline: Deadline,
        mut read: impl FnMut(&[u8]) -> Result<V>,
    ) -> Result<V> {
        if let Some(value) = self.pending.pop_front() {
            return value.and_then(|bytes| read(&bytes));
        }
        loop {
            match self.next_event(deadline, &mut read)? {
                Event::Data(value) => return Ok(value),
                Event::Sent(error) => return Err(error),
                Event::Ended => {}
                Event::Timeout => return Err(Error::Timeout),
                Event::Closed | Event::Exited => return Err(self.end_error(deadline)),
            }
        }
    }

    /// The error for a receive on a channel the child is done with: how the
    /// child ended, or `Disconnected` if it returned normally.
    pub(super) fn end_error(&mut self, deadline: Deadline) -> Error {
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
            Ok(status) => self.status_error(status),
            Err(Error::Timeout) => Error::Disconnected,
            Err(err) => err,
        }
    }
}

/// Sorts one frame as it comes off the socket: a `LOG` frame's frames go
/// to `logged`, to be read next (`None`); any other is classified.
fn sort<T>(
    tag: u8,
    body: &[u8],
    outcome: &mut Option<Outcome>,
    log: &mut Option<log::Reader>,
    logged: &mut VecDeque<(u8, Vec<u8>)>,
    read: &mut Option<impl FnOnce(&[u8]) -> Result<T>>,
) -> Option<Result<Event<T>>> {
    if tag == tag::LOG {
        let Some(log) = log.as_mut() else {
            return Some(Err(Error::codec("a log frame from a child without a log")));
        };
        return match log.announced(body) {
            Ok(bytes) => split_log(&bytes, logged).err().map(Err),
            Err(error) => Some(Err(error)),
        };
    }
    let read = read.take()?;
    Some(classify(tag, body, outcome, read))
}

/// Splits the frames read from a log into `logged`.
fn split_log(mut bytes: &[u8], logged: &mut VecDeque<(u8, Vec<u8>)>) -> Result<()> {
    while !bytes.is_empty() {
        let Some(body) = codec::split_frame(bytes, 1, bytes.len())? else {
            return Err(Error::codec("the log ends in the middle of a frame"));
        };
        logged.push_back((body[0], body[1..].to_vec()));
        bytes = &bytes[codec::HEADER + body.len()..];
    }
    Ok(())
}

/// Sorts one frame from the child: a value read by `read`, an error sent
/// in place of one, or the end of its call, whose outcome is kept.
fn classify<T>(
    tag: u8,
    body: &[u8],
    outcome: &mut Option<Outcome>,
    read: impl FnOnce(&[u8]) -> Result<T>,
) -> Result<Event<T>> {
    match tag {
        tag::DATA => read(body).map(Event::Data),
        tag::ERROR => Ok(Event::Sent(remote(body))),
        other => {
            *outcome = Some(Outcome::from_frame(other, body)?);
            Ok(Event::Ended)
        }
    }
}

/// What collectors read of their children, without blocking: an exchange,
/// a pool and a map see every child through these.
impl<R, S, V, K> Handle<R, S, V, K> {
    /// The serialized result once the child has ended (or how it failed,
    /// [`Error::Timeout`] among the ways when its deadline killed it),
    /// `None` while it runs.
    pub(crate) fn poll_result(&mut self) -> Option<Result<Vec<u8>>> {
        let inner = self.inner_mut();
        match inner.settle(Deadline::Now, false) {
            Ok(status) => Some(inner.result_bytes(status).map(<[u8]>::to_vec)),
            Err(Error::Timeout) => None,
            Err(err) => Some(Err(err)),
        }
    }

    /// The next thing the child said, without waiting: a value it sent
    /// (read first from what a wait for the result kept), an error sent in
    /// its place, the end of its call, or the end of its channel.
    pub(crate) fn poll_event(&mut self) -> Result<Event<Vec<u8>>> {
        let inner = self.inner_mut();
        if let Some(value) = inner.pending.pop_front() {
            return Ok(value.map_or_else(Event::Sent, Event::Data));
        }
        inner.next_event(Deadline::Now, |body| Ok(owned_body(body)))
    }

    /// Reads what the socket holds now into the handle, and tells whether
    /// anything came (bytes, or the end of the channel). With
    /// [`poll_buffered`](Self::poll_buffered) after it, a collector reads
    /// everything a child said at once, in one read.
    pub(crate) fn fill_now(&mut self) -> Result<bool> {
        let conn = &mut self.inner_mut().conn;
        let read = conn.fill()?;
        Ok(read > 0 || conn.is_eof())
    }

    /// As [`poll_event`](Self::poll_event), but only among what was read
    /// already: `None` where that would need a system call.
    pub(crate) fn poll_buffered(&mut self) -> Result<Option<Event<Vec<u8>>>> {
        let inner = self.inner_mut();
        if let Some(value) = inner.pending.pop_front() {
            return Ok(Some(value.map_or_else(Event::Sent, Event::Data)));
        }
        inner.buffered_event(|body| Ok(owned_body(body)))
    }

    /// Takes in what a dead worker wrote to its log and did not announce:
    /// the calls it had finished. Whether there was any.
    pub(crate) fn drain_log(&mut self) -> bool {
        self.inner_mut().drain_log()
    }

    /// How the child's call ended, once an [`Event::Ended`] said so; taken,
    /// so that a reusable worker's next call starts afresh.
    pub(crate) fn take_outcome(&mut self) -> Option<Result<Vec<u8>>> {
        self.inner_mut().outcome.take().map(Outcome::into_result)
    }

    /// Reaps a child that is gone or going, and tells how it ended: its
    /// deadline, a limit, or the bare status.
    pub(crate) fn reap_error(&mut self) -> Error {
        let inner = self.inner_mut();
        match inner.child.wait(Deadline::Never) {
            Ok(status) => inner.status_error(status),
            Err(err) => err,
        }
    }

    /// Whether nothing more can be read from the socket: the result (or
    /// the end of the stream) is in, only the exit remains to be seen.
    pub(crate) fn is_drained(&mut self) -> bool {
        let inner = self.inner_mut();
        inner.outcome.is_some() || inner.conn.is_eof()
    }

    /// Waits for the process to exit, and reaps it.
    pub(crate) fn wait_exit(&mut self, deadline: Deadline) -> Result<()> {
        self.inner_mut().child.wait(deadline).map(drop)
    }

    /// Sends a reusable worker its next calls, each a function's name and
    /// its serialized arguments, in one write.
    pub(crate) fn send_calls<'a>(
        &mut self,
        calls: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> Result<()> {
        let inner = self.inner_mut();
        let mut frames = Vec::new();
        // Every answer to its last batch was read: its log starts again.
        if let Some(body) = inner.log.as_mut().and_then(log::Reader::restart) {
            frames.extend_from_slice(&codec::header(1 + body.len())?);
            frames.push(tag::LOG);
            frames.extend_from_slice(&body);
        }
        for (name, args) in calls {
            push_call(&mut frames, name, args)?;
        }
        inner.conn.send_framed(&frames)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    use proptest::prelude::*;

    use super::*;

    type Said = std::result::Result<(u8, Vec<u8>), String>;

    /// What a connection that received `data` says, frame by frame, up to
    /// the first error. With a `plan`, runs of values are taken ahead
    /// first, as receives take them: each step of the plan takes that many
    /// (none: it reads the connection only), and gives the rest back.
    fn read_all(data: &[u8], plan: &[u8]) -> Vec<Said> {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let mut conn = Conn::new(ours.into()).unwrap();
        conn.set_max_frame(64);
        theirs.write_all(data).unwrap();
        drop(theirs);
        while matches!(conn.fill(), Ok(n) if n > 0) {}
        let (mut ahead, mut pending) = (Ahead::default(), VecDeque::new());
        let mut said = Vec::new();
        for step in (0..).map(|i| plan.get(i % plan.len().max(1)).copied()) {
            if let Some(take @ 1..) = step {
                if let Some(body) = ahead.fill(&mut conn) {
                    said.push(Ok((tag::DATA, body.to_vec())));
                    for _ in 1..take {
                        let Some(body) = ahead.next() else { break };
                        said.push(Ok((tag::DATA, body.to_vec())));
                    }
                }
                ahead.put_back(&mut conn, &mut pending);
            }
            match conn.with_frame(|tag, body| (tag, body.to_vec())) {
                Ok(Some(frame)) => said.push(Ok(frame)),
                Ok(None) => break,
                Err(err) => {
                    said.push(Err(err.to_string()));
                    break;
                }
            }
        }
        assert!(pending.is_empty());
        said
    }

    /// Frames of values and others, some with lying lengths, and junk.
    fn stream() -> impl Strategy<Value = Vec<u8>> {
        let tags = prop_oneof![
            3 => Just(tag::DATA),
            1 => Just(tag::ERROR),
            1 => Just(tag::RESULT),
            1 => any::<u8>(),
        ];
        let frame = (
            tags,
            proptest::collection::vec(any::<u8>(), 0..80),
            proptest::option::weighted(0.05, any::<u32>()),
        );
        let frames = proptest::collection::vec(frame, 0..40);
        let tail = proptest::collection::vec(any::<u8>(), 0..8);
        (frames, tail).prop_map(|(frames, tail)| {
            let mut out = Vec::new();
            for (tag, body, lie) in frames {
                let len = lie.unwrap_or_else(|| u32::try_from(body.len() + 1).unwrap());
                out.extend_from_slice(&len.to_le_bytes());
                out.push(tag);
                out.extend_from_slice(&body);
            }
            out.extend_from_slice(&tail);
            out
        })
    }

    proptest! {
        #[test]
        fn frames_taken_ahead_are_those_the_connection_would_give(
            data in stream(),
            plan in proptest::collection::vec(0_u8..5, 1..12),
        ) {
            prop_assert_eq!(read_all(&data, &plan), read_all(&data, &[]));
        }
    }
}
