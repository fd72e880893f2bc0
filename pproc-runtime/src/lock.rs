//! The one way the runtime takes a lock, and the slot that one thread at
//! a time takes a value out of without one.

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// Locks `mutex`, taking it over from a thread that panicked while holding
/// it: every value the runtime keeps under a lock stays consistent between
/// statements, so a panic elsewhere does not make it unusable.
pub(crate) fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Waits on `ready` with `guard`, as [`lock`] does: poison is ignored.
pub(crate) fn wait<'a, T>(ready: &Condvar, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    ready.wait(guard).unwrap_or_else(PoisonError::into_inner)
}

/// Waits on `ready` with `guard` for at most `timeout`, as [`lock`] does:
/// poison is ignored. Whether it was woken or timed out, the guard is
/// held again on return.
pub(crate) fn wait_timeout<'a, T>(
    ready: &Condvar,
    guard: MutexGuard<'a, T>,
    timeout: Duration,
) -> MutexGuard<'a, T> {
    ready
        .wait_timeout(guard, timeout)
        .unwrap_or_else(PoisonError::into_inner)
        .0
}

/// A box that one thread at a time takes out and puts back, without a
/// lock: the short way for a state that one thread uses again and again
/// (a stream's values), where a mutex would cost two atomic writes a use.
/// A thread that finds it out waits with [`Slot::wait`], or goes another
/// way.
pub(crate) struct Slot<T> {
    ptr: AtomicPtr<T>,
    /// Shared between threads as a mutex is: `T` must be `Send`.
    _owns: PhantomData<Mutex<T>>,
}

impl<T> Slot<T> {
    pub(crate) fn new(value: T) -> Self {
        Self {
            ptr: AtomicPtr::new(Box::into_raw(Box::new(value))),
            _owns: PhantomData,
        }
    }

    /// The value, unless another thread has it out; it goes back when the
    /// guard drops.
    #[inline]
    pub(crate) fn take(&self) -> Option<Taken<'_, T>> {
        let ptr = self.ptr.swap(ptr::null_mut(), Ordering::Acquire);
        // SAFETY: a non-null pointer here came from `Box::into_raw`, in
        // `new` or in `Taken::drop`, and the swap made this thread its only
        // holder.
        let value = (!ptr.is_null()).then(|| unsafe { Box::from_raw(ptr) })?;
        Some(Taken {
            slot: self,
            value: Some(value),
        })
    }

    /// The value, waiting for the thread that has it out: it keeps it for
    /// a few instructions, and never while it waits for anything.
    pub(crate) fn wait(&self) -> Taken<'_, T> {
        loop {
            if let Some(taken) = self.take() {
                return taken;
            }
            std::thread::yield_now();
        }
    }

    /// The value, for the slot's only owner.
    pub(crate) fn get_mut(&mut self) -> &mut T {
        let ptr = *self.ptr.get_mut();
        assert!(!ptr.is_null(), "a slot's value is out while it is owned");
        // SAFETY: `&mut self` excludes every `Taken`, so the value is in
        // the slot, and this borrow is the only one.
        unsafe { &mut *ptr }
    }
}

impl<T> Drop for Slot<T> {
    fn drop(&mut self) {
        let ptr = *self.ptr.get_mut();
        if !ptr.is_null() {
            // SAFETY: the value is in the slot, from `Box::into_raw`, and
            // nothing else can reach it any more.
            drop(unsafe { Box::from_raw(ptr) });
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for Slot<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.take() {
            Some(value) => f.debug_tuple("Slot").field(&*value).finish(),
            None => f.write_str("Slot(<out>)"),
        }
    }
}

/// A [`Slot`]'s value while one thread has it out.
pub(crate) struct Taken<'a, T> {
    slot: &'a Slot<T>,
    /// Always `Some` until the drop.
    value: Option<Box<T>>,
}

impl<T> Deref for Taken<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        self.value.as_deref().unwrap_or_else(|| unreachable!())
    }
}

impl<T> DerefMut for Taken<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.value.as_deref_mut().unwrap_or_else(|| unreachable!())
    }
}

impl<T> Drop for Taken<'_, T> {
    /// Puts the value back, also when a panic unwinds past its holder.
    #[inline]
    fn drop(&mut self) {
        if let Some(value) = self.value.take() {
            self.slot.ptr.store(Box::into_raw(value), Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_gives_its_value_to_one_holder_at_a_time() {
        let slot = Slot::new(vec![1]);
        let mut held = slot.take().unwrap();
        assert!(slot.take().is_none());
        held.push(2);
        drop(held);
        assert_eq!(*slot.wait(), [1, 2]);
        assert_eq!(*slot.take().unwrap(), [1, 2]);
    }

    #[test]
    fn a_slot_gets_its_value_back_from_a_holder_that_panics() {
        let slot = Slot::new(0);
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut held = slot.take().unwrap();
            *held = 7;
            panic!("while holding");
        }));
        assert!(panicked.is_err());
        assert_eq!(*slot.take().unwrap(), 7);
    }

    #[test]
    fn threads_that_wait_for_a_slot_each_get_it() {
        let slot = Slot::new(0_u64);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..10_000 {
                        *slot.wait() += 1;
                    }
                });
            }
        });
        let mut slot = slot;
        assert_eq!(*slot.get_mut(), 40_000);
    }
}
