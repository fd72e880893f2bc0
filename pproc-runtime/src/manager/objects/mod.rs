//! The kinds of shared objects, one file each (after crossbeam-channel's
//! `flavors/`). A kind's file holds both halves of its contract: its
//! operations (`MapOp`), its proxy with the public API (`Map`), and its
//! state in the server (`MapState`), whose [`ServerObject`] impl says what
//! each operation does.
//!
//! `kinds!` lists the kinds, and makes from the list what the protocol
//! and the server's object table use: [`Kind`] (what creating one takes),
//! [`ObjectOp`] (an operation on one) and [`Object`] (one in the server).
//! A new kind is a file and a line in that list, and its creators on
//! [`Manager`](super::Manager).
//!
//! Blocking operations wait on [`Watched`] state, for the [`Caller`] that
//! asked: a wait ends when it is satisfied, at its deadline, or when the
//! caller goes away.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use serde::{Deserialize, Serialize};

use super::transport::Stream;
use crate::wire::codec::encode;

/// The server's half of a kind: its state in the manager, how it is made,
/// and what each of its operations does. Values stay serialized: the
/// server does not know their types.
pub(crate) trait ServerObject: Sized {
    /// What the kind is called in messages: "a shared map".
    const NAME: &'static str;
    /// What creating one takes: its parameters and initial values.
    type New;
    /// Its operations.
    type Op;

    /// Makes one; an error for what it cannot be made from.
    fn build(new: Self::New, table: &Table) -> Result<Self, String>;

    /// Runs `op` for `caller`; its result, serialized.
    fn call(&self, op: Self::Op, caller: &Caller<'_>) -> CallResult;

    /// Gives back what `client` held and wakes its waiters: for kinds that
    /// clients hold (locks, semaphores), once `client` has gone away.
    fn release(&self, _client: ClientId) {}
}

/// The enums made from the list of kinds: each kind is a variant, named
/// as the kind, of its state's type in its own module.
macro_rules! kinds {
    ($($kind:ident: $module:ident::$state:ident,)*) => {
        $(pub(crate) mod $module;)*

        /// A kind of shared object, with what creating one takes.
        #[derive(Clone, Debug, Serialize, Deserialize)]
        pub(crate) enum Kind {
            $($kind(<$module::$state as ServerObject>::New),)*
        }

        /// An operation on a shared object, of the object's kind.
        #[derive(Clone, Debug, Serialize, Deserialize)]
        pub(crate) enum ObjectOp {
            $($kind(<$module::$state as ServerObject>::Op),)*
        }

        $(impl From<<$module::$state as ServerObject>::Op> for ObjectOp {
            fn from(op: <$module::$state as ServerObject>::Op) -> Self {
                Self::$kind(op)
            }
        })*

        /// A shared object, as the server keeps it.
        pub(crate) enum Object {
            $($kind($module::$state),)*
        }

        impl Kind {
            /// What the kind is called, in messages.
            pub(crate) fn name(&self) -> &'static str {
                match self {
                    $(Self::$kind(_) => <$module::$state as ServerObject>::NAME,)*
                }
            }
        }

        impl ObjectOp {
            /// What the kind it is an operation of is called.
            fn kind_name(&self) -> &'static str {
                match self {
                    $(Self::$kind(_) => <$module::$state as ServerObject>::NAME,)*
                }
            }
        }

        impl Object {
            /// Makes an object of `kind`.
            pub(crate) fn build(kind: Kind, table: &Table) -> Result<Self, String> {
                match kind {
                    $(Kind::$kind(new) => $module::$state::build(new, table).map(Self::$kind),)*
                }
            }

            /// Runs `op`, if it is an operation of this object's kind.
            pub(crate) fn call(&self, op: ObjectOp, caller: &Caller<'_>) -> CallResult {
                match (self, op) {
                    $((Self::$kind(state), ObjectOp::$kind(op)) => state.call(op, caller),)*
                    (object, op) => Err(Fault::Message(format!(
                        "a shared {} has no {} operations",
                        object.kind_name(),
                        op.kind_name()
                    ))),
                }
            }

            /// Gives back what `client` held.
            pub(crate) fn release(&self, client: ClientId) {
                match self {
                    $(Self::$kind(state) => state.release(client),)*
                }
            }

            fn kind_name(&self) -> &'static str {
                match self {
                    $(Self::$kind(_) => <$module::$state as ServerObject>::NAME,)*
                }
            }
        }
    };
}

// The order is the protocol's: a kind's place in the list is how its
// `Kind` and `ObjectOp` variants travel.
kinds! {
    Map: map::MapState,
    List: list::ListState,
    Queue: queue::QueueState,
    Value: value::ValueState,
    Namespace: namespace::NamespaceState,
    Lock: lock::LockState,
    Semaphore: semaphore::SemaphoreState,
    Condition: condition::ConditionState,
    Event: event::EventState,
    Array: array::ArrayState,
    Custom: custom::CustomState,
}

/// How often a blocked call checks that its client is still there.
const PATIENCE: Duration = Duration::from_millis(100);

/// A client connection's id: what holds locks and semaphores.
pub(crate) type ClientId = u64;

/// What an operation gives: its result, serialized, or why it failed.
pub(crate) type CallResult<T = Vec<u8>> = Result<T, Fault>;

/// Why an operation failed, before it becomes an answer.
pub(crate) enum Fault {
    /// A blocking operation's timeout passed.
    Timeout,
    /// The client went away while the call waited.
    Gone,
    /// Refused: why.
    Message(String),
}

impl From<String> for Fault {
    fn from(message: String) -> Self {
        Self::Message(message)
    }
}

impl From<crate::Error> for Fault {
    fn from(err: crate::Error) -> Self {
        Self::Message(crate::error::with_causes(&err))
    }
}

/// `value`, serialized, as an operation's result.
pub(crate) fn done<T: Serialize + ?Sized>(value: &T) -> CallResult {
    encode(value).map_err(Fault::from)
}

/// `index` as an index into `len` values.
fn index(index: u64, len: usize) -> CallResult<usize> {
    usize::try_from(index)
        .ok()
        .filter(|i| *i < len)
        .ok_or_else(|| Fault::Message(format!("index {index} out of range for length {len}")))
}

/// A deadline from an optional timeout in milliseconds.
fn deadline(timeout_ms: Option<u64>) -> Option<Instant> {
    timeout_ms.and_then(|ms| Instant::now().checked_add(Duration::from_millis(ms)))
}

/// What one call sees of its client.
pub(crate) struct Caller<'a> {
    pub(crate) id: ClientId,
    pub(crate) stream: &'a Stream,
}

impl Caller<'_> {
    /// Whether the client has gone away (it sends nothing while it waits
    /// for an answer, so anything readable means it closed).
    fn gone(&self) -> bool {
        let mut fds = [PollFd::new(
            self.stream.as_fd(),
            PollFlags::POLLIN | PollFlags::from_bits_retain(libc::POLLRDHUP),
        )];
        matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
    }
}

/// State that blocking operations wait on: a mutex, and a condition
/// variable that its changes notify.
pub(crate) struct Watched<T> {
    state: Mutex<T>,
    changed: Condvar,
}

impl<T> Watched<T> {
    fn new(state: T) -> Self {
        Self {
            state: Mutex::new(state),
            changed: Condvar::new(),
        }
    }

    /// The state, locked.
    fn lock(&self) -> MutexGuard<'_, T> {
        crate::lock::lock(&self.state)
    }

    /// Wakes every waiter, to look at the state again.
    fn notify(&self) {
        self.changed.notify_all();
    }

    /// The state, locked once `ready` holds; [`Fault::Timeout`] if it did
    /// not within `timeout_ms` (`None`: as long as it takes), and
    /// [`Fault::Gone`] if `caller` went away meanwhile, checked every
    /// [`PATIENCE`].
    fn wait(
        &self,
        caller: &Caller<'_>,
        timeout_ms: Option<u64>,
        mut ready: impl FnMut(&mut T) -> bool,
    ) -> CallResult<MutexGuard<'_, T>> {
        let deadline = deadline(timeout_ms);
        let mut guard = self.lock();
        loop {
            if ready(&mut guard) {
                return Ok(guard);
            }
            let slice = match deadline {
                Some(at) => match at.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => left.min(PATIENCE),
                    _ => return Err(Fault::Timeout),
                },
                None => PATIENCE,
            };
            if caller.gone() {
                return Err(Fault::Gone);
            }
            guard = crate::lock::wait_timeout(&self.changed, guard, slice);
        }
    }
}

impl<T: Default> Default for Watched<T> {
    fn default() -> Self {
        Self::new(T::default())
    }
}

/// The shared objects, by id: what the server's clients share.
pub(crate) struct Table {
    objects: Mutex<HashMap<u64, Arc<Object>>>,
    next: AtomicU64,
}

impl Table {
    pub(crate) fn new() -> Self {
        Self {
            objects: Mutex::default(),
            next: AtomicU64::new(1),
        }
    }

    /// The object `id`.
    pub(crate) fn get(&self, id: u64) -> Option<Arc<Object>> {
        crate::lock::lock(&self.objects).get(&id).cloned()
    }

    /// Lists `object` under a new id: the id, and the object as listed.
    pub(crate) fn insert(&self, object: Object) -> (u64, Arc<Object>) {
        let object = Arc::new(object);
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        crate::lock::lock(&self.objects).insert(id, Arc::clone(&object));
        (id, object)
    }

    /// Every object.
    pub(crate) fn all(&self) -> Vec<Arc<Object>> {
        crate::lock::lock(&self.objects).values().cloned().collect()
    }
}
