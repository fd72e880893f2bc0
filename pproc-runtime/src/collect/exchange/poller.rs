//! The exchange's epoll set: which descriptors of which slot are watched,
//! and waiting for them. It knows tokens and descriptors, nothing about
//! what the children run.

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

use crate::error::{Error, Result};
use crate::parent::handle::Handle;
use crate::wire::wait::Deadline;

/// Readiness events taken per wait; more stay queued in the kernel (the set
/// is level-triggered) for the next one.
const EVENTS: usize = 256;

/// Which descriptors of one child are in the set. Its socket leaves once
/// drained, so that an ended stream does not wake the exchange over and
/// over; its pidfd leaves when the child is reaped.
#[derive(Debug, Default)]
pub(super) struct Registered {
    pub(super) socket: bool,
    pub(super) exit: bool,
}

/// The epoll set, made on first use. Slot `n`'s socket is token `2n`, its
/// pidfd token `2n + 1`.
#[derive(Default)]
pub(super) struct Poller {
    epoll: Option<Epoll>,
    events: Vec<EpollEvent>,
}

impl Poller {
    fn epoll(&mut self) -> Result<&Epoll> {
        if self.epoll.is_none() {
            self.epoll =
                Some(Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(Error::from_errno)?);
        }
        self.epoll
            .as_ref()
            .ok_or_else(|| Error::Io(std::io::Error::other("no epoll instance")))
    }

    /// Watches the socket and the pidfd (where there is one) of the child
    /// in `slot`.
    pub(super) fn add(&mut self, slot: usize, handle: &Handle<(), (), ()>) -> Result<Registered> {
        let token = u64::try_from(slot).unwrap_or(u64::MAX / 2) * 2;
        let epoll = self.epoll()?;
        epoll
            .add(handle, EpollEvent::new(EpollFlags::EPOLLIN, token))
            .map_err(Error::from_errno)?;
        let mut watched = Registered {
            socket: true,
            exit: false,
        };
        if let Some(pidfd) = handle.pidfd() {
            if let Err(err) = epoll.add(pidfd, EpollEvent::new(EpollFlags::EPOLLIN, token + 1)) {
                let _ = epoll.delete(handle);
                return Err(Error::from_errno(err));
            }
            watched.exit = true;
        }
        Ok(watched)
    }

    /// Stops watching the child's socket.
    pub(super) fn drop_socket(
        &mut self,
        handle: &Handle<(), (), ()>,
        watched: &mut Registered,
    ) -> Result<()> {
        if std::mem::take(&mut watched.socket)
            && let Some(epoll) = &self.epoll
        {
            epoll.delete(handle).map_err(Error::from_errno)?;
        }
        Ok(())
    }

    /// Stops watching the child's socket and its pidfd.
    pub(super) fn drop_all(
        &mut self,
        handle: &Handle<(), (), ()>,
        watched: &mut Registered,
    ) -> Result<()> {
        self.drop_socket(handle, watched)?;
        if std::mem::take(&mut watched.exit)
            && let (Some(epoll), Some(pidfd)) = (&self.epoll, handle.pidfd())
        {
            epoll.delete(pidfd).map_err(Error::from_errno)?;
        }
        Ok(())
    }

    /// Forgets every descriptor at once, as when every child is dropped.
    pub(super) fn clear(&mut self) {
        self.epoll = None;
    }

    /// Waits up to `deadline` for watched descriptors; returns the slots
    /// they belong to. With `tick`, some child has no pidfd: the wait ends
    /// after a [`BLIND_TICK`](crate::wire::wait::BLIND_TICK) at the latest, so that its exit is seen.
    pub(super) fn wait(&mut self, deadline: Deadline, tick: bool) -> Result<Vec<usize>> {
        let wait = if tick { deadline.or_tick() } else { deadline };
        let mut events = std::mem::take(&mut self.events);
        events.resize(EVENTS, EpollEvent::empty());
        let epoll = self.epoll()?;
        let n = loop {
            let timeout = wait.poll_timeout().unwrap_or(EpollTimeout::ZERO);
            match epoll.wait(&mut events, timeout) {
                Ok(n) => break Ok(n),
                Err(Errno::EINTR) => {}
                Err(err) => break Err(err),
            }
        };
        let slots = n.map(|n| {
            events[..n]
                .iter()
                .filter_map(|e| usize::try_from(e.data() / 2).ok())
                .collect::<Vec<_>>()
        });
        self.events = events;
        slots.map_err(Error::from_errno)
    }
}
