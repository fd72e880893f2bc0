//! A child in the exchange, as one state per kind of child, and how the
//! exchange services each when the child has something to say.

use std::collections::VecDeque;
use std::time::Instant;

use super::poller::Registered;
use super::store::Job;
use super::{Exchange, Queued};
use crate::error::{Error, Result};
use crate::parent::handle::{Event, Handle};
use crate::wire::wait::Deadline;

/// Values read from one streaming child per turn, so that a child that
/// never stops sending does not starve the others.
const VALUES_PER_TURN: usize = 64;

/// Where a child of the exchange stands.
pub(super) enum State<S> {
    /// Running a call that returns its value.
    Call(Job<S>),
    /// Running a call whose values arrive on its channel.
    Stream(Job<S>),
    /// A reusable worker: running a batch of calls, or idle between
    /// batches.
    Worker(Worker<S>),
    /// Its call has delivered its value (a streaming call without
    /// [`continuous`](Exchange::continuous)): the exchange reads no more
    /// from it, and reaps it once it exits.
    Delivered(Job<S>),
    /// Delivered, exited and reaped, and kept ([`autoclose`] off) until it
    /// is removed or the exchange finishes.
    ///
    /// [`autoclose`]: Exchange::autoclose
    Exited(Job<S>),
}

/// A reusable worker's calls.
pub(super) struct Worker<S> {
    /// The calls sent to it, in the order it runs them: the first runs
    /// now. Each keeps its arguments, to run elsewhere if the worker dies
    /// before it.
    pub(super) batch: VecDeque<Queued<S>>,
    /// When the batch was sent, and how many calls it carried.
    sent: Instant,
    size: usize,
    /// Calls it has ended, all batches together.
    pub(super) calls: usize,
}

impl<S> Worker<S> {
    /// A fresh worker, idle.
    pub(super) fn new() -> Self {
        Self {
            batch: VecDeque::new(),
            sent: Instant::now(),
            size: 0,
            calls: 0,
        }
    }

    /// Gives it `batch`, sent just now.
    pub(super) fn sent(&mut self, batch: VecDeque<Queued<S>>) {
        self.size = batch.len();
        self.batch = batch;
        self.sent = Instant::now();
    }
}

/// A child in the exchange.
pub(super) struct Member<S> {
    pub(super) handle: Handle<(), (), ()>,
    pub(super) state: State<S>,
    pub(super) watched: Registered,
}

impl<S> Member<S> {
    /// The call it runs or ran; `None` for an idle worker.
    pub(super) fn job(&self) -> Option<&Job<S>> {
        match &self.state {
            State::Call(job) | State::Stream(job) | State::Delivered(job) | State::Exited(job) => {
                Some(job)
            }
            State::Worker(worker) => worker.batch.front().map(|queued| &queued.job),
        }
    }

    /// The call still taking values: not one that has delivered its value.
    fn job_mut(&mut self) -> Option<&mut Job<S>> {
        match &mut self.state {
            State::Call(job) | State::Stream(job) => Some(job),
            State::Worker(worker) => worker.batch.front_mut().map(|queued| &mut queued.job),
            State::Delivered(_) | State::Exited(_) => None,
        }
    }

    /// Whether it runs a call now.
    pub(super) fn running(&self) -> bool {
        match &self.state {
            State::Call(_) | State::Stream(_) => true,
            State::Worker(worker) => !worker.batch.is_empty(),
            State::Delivered(_) | State::Exited(_) => false,
        }
    }

    /// Whether it is a reusable worker between batches.
    pub(super) fn idle(&self) -> bool {
        matches!(&self.state, State::Worker(worker) if worker.batch.is_empty())
    }

    /// Whether the process still takes a place under the limit.
    pub(super) fn live(&self) -> bool {
        !matches!(self.state, State::Exited(_))
    }

    /// Whether the exchange waits for something from it.
    pub(super) fn watched(&self) -> bool {
        !self.idle() && self.live()
    }
}

impl<S> Exchange<S> {
    pub(super) fn member_mut(&mut self, slot: usize) -> Option<&mut Member<S>> {
        self.members.get_mut(slot).and_then(Option::as_mut)
    }

    /// Moves the member in `slot` to the state `change` makes of its own.
    fn change_state(&mut self, slot: usize, change: impl FnOnce(State<S>) -> State<S>) {
        if let Some(member) = self.members.get_mut(slot).and_then(Option::take) {
            self.members[slot] = Some(Member {
                state: change(member.state),
                ..member
            });
        }
    }

    /// Hands a value of the call in `slot` (or its failure) to the store.
    fn deliver(&mut self, slot: usize, value: Result<Vec<u8>>) -> Result<()> {
        let Some(member) = self.members.get_mut(slot).and_then(Option::as_mut) else {
            return Ok(());
        };
        let pid = Some(member.handle.pid());
        let Some(job) = member.job_mut() else {
            return Ok(());
        };
        let outcome = match value {
            Ok(bytes) => job.deliver(&mut self.store, Ok(&bytes), pid),
            Err(error) => job.deliver(&mut self.store, Err(error), pid),
        };
        self.check(outcome)
    }

    /// Tells the store that the call in `slot` is over.
    fn conclude(&mut self, slot: usize) -> Result<()> {
        let Some(member) = self.members.get(slot).and_then(Option::as_ref) else {
            return Ok(());
        };
        let Some(job) = member.job() else {
            return Ok(());
        };
        let outcome = job.end(&mut self.store, Some(member.handle.pid()));
        self.bar.ended();
        self.check(outcome)
    }

    /// The call in `slot` ended with `last` (a value or a failure, if it
    /// owes one): stores it, tells the store, and lets the child go.
    fn finish_call(&mut self, slot: usize, last: Option<Result<Vec<u8>>>) -> Result<()> {
        if let Some(last) = last {
            self.deliver(slot, last)?;
        }
        self.conclude(slot)?;
        drop(self.take(slot)?);
        Ok(())
    }

    /// Reads what the child in `slot` has to say and stores it; ends its
    /// call if it is over. Returns how many values and failures went to the
    /// store.
    pub(super) fn service(&mut self, slot: usize) -> Result<usize> {
        let Some(member) = self.members.get(slot).and_then(Option::as_ref) else {
            return Ok(0);
        };
        match member.state {
            State::Call(_) => self.service_call(slot),
            State::Stream(_) => self.service_stream(slot),
            State::Worker(_) if member.running() => self.service_worker(slot),
            State::Worker(_) | State::Delivered(_) | State::Exited(_) => {
                self.service_done(slot).map(|()| 0)
            }
        }
    }

    /// A child that returns its value: stores it once the child has ended.
    fn service_call(&mut self, slot: usize) -> Result<usize> {
        let Some(member) = self.member_mut(slot) else {
            return Ok(0);
        };
        match member.handle.poll_result() {
            None => {
                if member.watched.socket && member.handle.is_drained() {
                    self.unwatch_socket(slot)?;
                }
                Ok(0)
            }
            Some(result) => {
                self.finish_call(slot, Some(result))?;
                Ok(1)
            }
        }
    }

    /// A child that streams its values: stores them as they come.
    fn service_stream(&mut self, slot: usize) -> Result<usize> {
        let mut stored = 0;
        while stored < VALUES_PER_TURN {
            let Some(member) = self.member_mut(slot) else {
                return Ok(stored);
            };
            match member.handle.poll_event() {
                // An error sent in place of a value is stored as a failure,
                // and the stream goes on.
                Ok(event @ (Event::Data(_) | Event::Sent(_))) => {
                    match event {
                        Event::Sent(error) => self.deliver(slot, Err(error))?,
                        Event::Data(bytes) => self.deliver(slot, Ok(bytes))?,
                        _ => {}
                    }
                    stored += 1;
                    if !self.continuous {
                        self.retire(slot)?;
                        return Ok(stored);
                    }
                }
                // Its return value is not stored: the end is seen below,
                // once the channel is drained.
                Ok(Event::Ended) => {}
                Ok(Event::Timeout) => return Ok(stored),
                Ok(Event::Closed | Event::Exited) => return Ok(stored + self.end_stream(slot)?),
                Err(error) => {
                    // A broken stream: the call has failed, the child goes.
                    self.finish_call(slot, Some(Err(error)))?;
                    return Ok(stored + 1);
                }
            }
        }
        Ok(stored)
    }

    /// A streaming child is done sending: once it has exited, its call
    /// ends (with a failure if it owed a value or died). Returns how many
    /// failures were stored.
    fn end_stream(&mut self, slot: usize) -> Result<usize> {
        self.unwatch_socket(slot)?;
        let continuous = self.continuous;
        let Some(member) = self.member_mut(slot) else {
            return Ok(0);
        };
        let values = member.job().map_or(0, |job| job.values);
        let Some(result) = member.handle.poll_result() else {
            return Ok(0);
        };
        let last = owed(result, true, continuous, values);
        let failed = usize::from(last.is_some());
        self.finish_call(slot, last)?;
        Ok(failed)
    }

    /// The call in `slot` has delivered its value: close its channel (with
    /// `autoclose`) and wait for the process to exit.
    fn retire(&mut self, slot: usize) -> Result<()> {
        self.conclude(slot)?;
        self.unwatch_socket(slot)?;
        let autoclose = self.autoclose;
        if let Some(member) = self.member_mut(slot)
            && autoclose
        {
            member.handle.close_channel();
        }
        self.change_state(slot, |state| match state {
            State::Stream(job) => State::Delivered(job),
            other => other,
        });
        self.service_done(slot)
    }

    /// A delivered child (or an idle worker): reaps it if it has exited.
    pub(super) fn service_done(&mut self, slot: usize) -> Result<()> {
        let autoclose = self.autoclose;
        let Some(member) = self.member_mut(slot) else {
            return Ok(());
        };
        if member.idle() {
            // An idle worker only wakes the exchange if it died (or its
            // channel broke).
            if matches!(poll_turn(&mut member.handle, true).0, Turn::Dead(_)) {
                drop(self.take(slot)?);
                self.replenish()?;
            }
            return Ok(());
        }
        match member.handle.wait_exit(Deadline::Now) {
            Err(Error::Timeout) => Ok(()),
            _ if autoclose => self.take(slot).map(drop),
            _ => {
                self.unwatch_all(slot)?;
                self.change_state(slot, |state| match state {
                    State::Delivered(job) => State::Exited(job),
                    other => other,
                });
                Ok(())
            }
        }
    }

    /// A reusable worker running a batch: stores what each call delivers,
    /// as each ends, and makes the worker idle (or retires it) when the
    /// batch is over.
    fn service_worker(&mut self, slot: usize) -> Result<usize> {
        let mut stored = 0;
        let mut fresh = true;
        loop {
            let continuous = self.continuous;
            let Some(member) = self.member_mut(slot) else {
                return Ok(stored);
            };
            if !member.running() {
                return Ok(stored);
            }
            let (turn, values) = poll_turn(&mut member.handle, fresh);
            fresh = false;
            let (streams, delivered) = member.job().map_or((false, 0), |j| (j.streams, j.values));
            // A streaming call's values are stored: all with `continuous`,
            // else its first.
            let wanted = match streams {
                true if continuous => values.len(),
                true => usize::from(delivered == 0),
                false => 0,
            };
            let sent = values.len();
            for value in values.into_iter().take(wanted) {
                self.deliver(slot, value)?;
                stored += 1;
            }
            // Nothing delivered before and nothing sent now: a streaming
            // call that owed one value has none.
            let delivered = delivered + sent;
            match turn {
                Turn::Running => return Ok(stored),
                Turn::Done(result) => {
                    let last = owed(result, streams, continuous, delivered);
                    stored += usize::from(last.is_some());
                    if let Some(last) = last {
                        self.deliver(slot, last)?;
                    }
                    self.conclude(slot)?;
                    // The next call of the batch may have ended too.
                    self.next_turn(slot)?;
                }
                Turn::Dead(error) => {
                    // A worker's handle names the worker, not a function:
                    // an overflow is the call's it was running.
                    let error = match (error, self.member_mut(slot).and_then(|m| m.job())) {
                        (Error::StackOverflow { .. }, Some(job)) => Error::StackOverflow {
                            name: job.name.clone(),
                        },
                        (error, _) => error,
                    };
                    if let Some(member) = self.members.get(slot).and_then(Option::as_ref) {
                        let function = member.job().map_or("", |job| job.name.as_str());
                        crate::trace::worker_replaced(function, member.handle.pid(), &error);
                    }
                    // A lost host's call may run again, as asked.
                    if matches!(error, Error::HostLost { .. }) && self.requeue_lost(slot) {
                        drop(self.take(slot)?);
                        self.replenish()?;
                        return Ok(stored);
                    }
                    // Only the call it was running fails: the rest of its
                    // batch runs elsewhere, first in line.
                    self.requeue_rest(slot);
                    self.finish_call(slot, Some(Err(error)))?;
                    self.replenish()?;
                    return Ok(stored + 1);
                }
            }
        }
    }

    /// Puts back at the head of the queue, in order, every call a worker on
    /// a lost host was sent, the one it was running included, if that one
    /// may run again ([`retry_lost`](Exchange::retry_lost)): it has
    /// delivered nothing, and has not run out of retries. Whether they were
    /// put back.
    fn requeue_lost(&mut self, slot: usize) -> bool {
        let retry = self.retry_lost;
        let Some(member) = self.member_mut(slot) else {
            return false;
        };
        let State::Worker(worker) = &mut member.state else {
            return false;
        };
        match worker.batch.front_mut() {
            Some(running) if running.job.values == 0 && running.lost < retry => {
                running.lost += 1;
            }
            _ => return false,
        }
        let batch: Vec<_> = worker.batch.drain(..).collect();
        for queued in batch.into_iter().rev() {
            self.waiting.push_front(queued);
        }
        true
    }

    /// Puts back at the head of the queue, in order, the calls a worker was
    /// sent but has not started.
    fn requeue_rest(&mut self, slot: usize) {
        let Some(member) = self.member_mut(slot) else {
            return;
        };
        let State::Worker(worker) = &mut member.state else {
            return;
        };
        let rest: Vec<_> = worker.batch.drain(1..).collect();
        for queued in rest.into_iter().rev() {
            self.waiting.push_front(queued);
        }
    }

    /// A worker's call is over: the next call of its batch runs, or the
    /// batch is over and the worker is idle, or replaced by a fresh process
    /// once it has run as many calls as [`recycle`] allows.
    ///
    /// [`recycle`]: Exchange::recycle
    fn next_turn(&mut self, slot: usize) -> Result<()> {
        let recycle = self.recycle;
        let Some(member) = self.members.get_mut(slot).and_then(Option::as_mut) else {
            return Ok(());
        };
        let State::Worker(worker) = &mut member.state else {
            return Ok(());
        };
        worker.batch.pop_front();
        worker.calls += 1;
        if !worker.batch.is_empty() {
            return Ok(());
        }
        self.grain.measured(worker.sent.elapsed(), worker.size);
        if recycle.is_some_and(|n| worker.calls >= n) {
            // Retired: an idle worker loses nothing by a kill; the next
            // call starts a fresh one.
            drop(self.take(slot)?);
            self.replenish()?;
        }
        Ok(())
    }
}

/// Where a reusable worker's current call stands.
enum Turn {
    /// Still running.
    Running,
    /// Done: its serialized result, or how it failed.
    Done(Result<Vec<u8>>),
    /// The worker is gone (killed, or its channel broke).
    Dead(Error),
}

/// Reads everything a worker has said without waiting: the values its call
/// sent, and where the call stands. The first look of a turn (`fresh`)
/// reads the socket once; the calls of a batch that ended meanwhile are
/// then in the buffer, and later looks of the same turn read only that.
fn poll_turn(handle: &mut Handle<(), (), ()>, fresh: bool) -> (Turn, Vec<Result<Vec<u8>>>) {
    let mut values = Vec::new();
    let came = match fresh.then(|| handle.fill_now()) {
        Some(Ok(came)) => came,
        Some(Err(error)) => return (Turn::Dead(error), values),
        None => true,
    };
    loop {
        let event = match handle.poll_buffered() {
            Ok(Some(event)) => Ok(event),
            Ok(None) if came => Ok(Event::Timeout),
            // Woken with nothing to read: it may have exited without
            // closing its channel. The full look polls its exit too.
            Ok(None) => handle.poll_event(),
            Err(error) => Err(error),
        };
        let turn = match event {
            Ok(Event::Data(bytes)) => {
                values.push(Ok(bytes));
                continue;
            }
            Ok(Event::Sent(error)) => {
                values.push(Err(error));
                continue;
            }
            Ok(Event::Ended) => match handle.take_outcome() {
                Some(result) => Turn::Done(result),
                None => continue,
            },
            Ok(Event::Timeout) => Turn::Running,
            // It is gone or going: a dead worker's channel closes as it
            // exits. What it wrote to its log and did not announce comes
            // first: the calls it had finished.
            Ok(Event::Closed | Event::Exited) if handle.drain_log() => continue,
            Ok(Event::Closed | Event::Exited) => Turn::Dead(handle.reap_error()),
            Err(error) => Turn::Dead(error),
        };
        return (turn, values);
    }
}

/// What a call that ended with `result` still owes its store: its value (a
/// call that returns one), a failure (it failed, or a streaming call that
/// owed one value returned without it), or nothing (a streaming call's
/// return value is not stored).
fn owed(
    result: Result<Vec<u8>>,
    streams: bool,
    continuous: bool,
    delivered: usize,
) -> Option<Result<Vec<u8>>> {
    match result {
        Ok(_) if streams && !continuous && delivered == 0 => Some(Err(Error::Disconnected)),
        Ok(_) if streams => None,
        other => Some(other),
    }
}
