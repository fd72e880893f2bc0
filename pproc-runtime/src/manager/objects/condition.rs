//! A shared condition variable, with its lock.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::lock::{LockOp, LockState, NewLock, locking};
use super::{CallResult, Caller, Fault, Object, ObjectOp, ServerObject, Watched, done, Table};
use crate::error::Result;
use crate::manager::client::{millis, proxy_type};

/// What a shared condition variable does. Timeouts are in milliseconds;
/// `None` waits as long as it takes.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub(crate) enum ConditionOp {
    /// An operation on its lock.
    Lock(LockOp),
    /// Answers whether it was notified.
    Wait { timeout_ms: Option<u64> },
    /// Wakes up to `n` waiters.
    Notify { n: u64 },
}

proxy_type!(
    /// A shared condition variable, with its lock.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> pproc::Result<()> {
    /// let manager = pproc::Manager::start()?;
    /// let (ready, done) = (manager.condition(None)?, manager.value(&false)?);
    /// let (ready2, done2) = (ready.clone(), done.clone()); // other holders
    /// let worker = std::thread::spawn(move || -> pproc::Result<()> {
    ///     let _held = ready2.lock()?;
    ///     done2.set(&true)?;
    ///     ready2.notify_all()
    /// });
    /// let _held = ready.lock()?;
    /// while !done.get()? {
    ///     assert!(ready.wait(None)?, "no timeout: woken by a notification");
    /// }
    /// # worker.join().expect("the worker panicked")?;
    /// # Ok(())
    /// # }
    /// ```
    Condition
);

locking!(Condition, |op| ObjectOp::Condition(ConditionOp::Lock(op)));

impl Condition {
    /// Releases the lock (which this proxy must hold), waits until
    /// notified or `timeout` passes (`None`: as long as it takes), and
    /// takes the lock back; whether it was notified.
    ///
    /// # Errors
    ///
    /// [`Error::Remote`](crate::Error::Remote) if this proxy does not hold
    /// the lock, or as [`Map::insert`](crate::manager::Map::insert).
    pub fn wait(&self, timeout: Option<Duration>) -> Result<bool> {
        self.proxy.ask(ConditionOp::Wait {
            timeout_ms: millis(timeout),
        })
    }

    /// Wakes up to `n` waiters.
    ///
    /// # Errors
    ///
    /// As [`Map::insert`](crate::manager::Map::insert).
    pub fn notify(&self, n: u64) -> Result<()> {
        self.proxy.ask(ConditionOp::Notify { n })
    }

    /// Wakes every waiter.
    ///
    /// # Errors
    ///
    /// As [`Map::insert`](crate::manager::Map::insert).
    pub fn notify_all(&self) -> Result<()> {
        self.notify(u64::MAX)
    }
}

/// A waiter's flag, set when a notify picks it.
type Waiter = Arc<AtomicBool>;

/// A condition variable in the server: its lock, a shared object of its
/// own, and its waiters in line.
pub(crate) struct ConditionState {
    /// Always a lock (see [`build`](Self::build)).
    lock: Arc<Object>,
    waiters: Watched<VecDeque<Waiter>>,
}

impl ServerObject for ConditionState {
    const NAME: &'static str = "condition";
    /// The shared lock it uses; `None`: a new reentrant one.
    type New = Option<u64>;
    type Op = ConditionOp;

    fn build(with: Option<u64>, table: &Table) -> Result<Self, String> {
        let lock = if let Some(id) = with {
            let object = table
                .get(id)
                .ok_or_else(|| format!("no shared lock {id} on this manager"))?;
            if !matches!(&*object, Object::Lock(..)) {
                return Err("a condition needs a shared `Lock` or `RLock`".into());
            }
            object
        } else {
            // Listed, so that a client that dies holding it gives it back.
            let new = NewLock { reentrant: true };
            table.insert(Object::Lock(LockState::build(new, table)?)).1
        };
        Ok(Self {
            lock,
            waiters: Watched::default(),
        })
    }

    fn call(&self, op: ConditionOp, caller: &Caller<'_>) -> CallResult {
        let Object::Lock(lock) = &*self.lock else {
            return Err(Fault::Message("a condition without a lock".into()));
        };
        match op {
            ConditionOp::Lock(op) => lock.call(op, caller),
            ConditionOp::Wait { timeout_ms } => self.wait(lock, timeout_ms, caller),
            ConditionOp::Notify { n } => {
                let mut waiters = self.waiters.lock();
                for _ in 0..n {
                    let Some(waiter) = waiters.pop_front() else {
                        break;
                    };
                    waiter.store(true, Ordering::Release);
                }
                self.waiters.notify();
                done(&())
            }
        }
    }
}

impl ConditionState {
    /// Gives `lock` up, waits to be notified, takes `lock` back as it was;
    /// whether it was notified.
    fn wait(&self, lock: &LockState, timeout_ms: Option<u64>, caller: &Caller<'_>) -> CallResult {
        // Line up as a waiter while still holding the lock, so that a
        // notify made after we let it go reaches us; then give the lock
        // up, whatever its count, and wait.
        let me = Arc::new(AtomicBool::new(false));
        let count = {
            let mut state = lock.ownership.lock();
            if state.owner != Some(caller.id) {
                return Err(Fault::Message(
                    "wait on a condition whose lock is not held".into(),
                ));
            }
            self.waiters.lock().push_back(Arc::clone(&me));
            let count = state.count;
            state.owner = None;
            state.count = 0;
            lock.ownership.notify();
            count
        };
        let woken = self
            .waiters
            .wait(caller, timeout_ms, |_| me.load(Ordering::Acquire))
            // The waiters' lock goes before the lock is taken back:
            // `wait` takes them in the other order.
            .map(drop);
        let notified = match woken {
            Ok(()) => true,
            Err(fault) => {
                // Out of the line, so that no notify is spent on a waiter
                // that left.
                self.waiters.lock().retain(|w| !Arc::ptr_eq(w, &me));
                match fault {
                    Fault::Timeout => me.load(Ordering::Acquire),
                    other => return Err(other),
                }
            }
        };
        // Take the lock back, as it was.
        let mut state = lock.ownership.wait(caller, None, |s| s.owner.is_none())?;
        state.owner = Some(caller.id);
        state.count = count;
        done(&notified)
    }
}
