//! The live children of this process (concurrence's `children`, `tree`,
//! `parent`), and waiting for all of them (pprocess's `waitall`).

use std::collections::BTreeMap;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use nix::poll::{PollFd, PollFlags};
use nix::unistd::Pid;

use super::spawn::pidfd_open;
use crate::error::{Error, Result};
use crate::lock::lock;
use crate::wire::wait::{Deadline, poll_until};

/// Children started by this process and not reaped yet, by pid, with the
/// names of the functions they run. A handle reaps its child with this lock
/// held, so a pid found here is still this process's child.
static LIVE: Mutex<BTreeMap<i32, String>> = Mutex::new(BTreeMap::new());

/// The parent of this process, when it runs as a pproc child.
static PARENT: OnceLock<u32> = OnceLock::new();

pub(crate) fn live() -> MutexGuard<'static, BTreeMap<i32, String>> {
    lock(&LIVE)
}

/// Records a started child.
pub(crate) fn enter(pid: Pid, name: &str) {
    live().insert(pid.as_raw(), name.to_owned());
}

/// Records that this process runs as a child of `parent`.
pub(crate) fn set_parent(parent: i32) {
    let _ = PARENT.set(parent.cast_unsigned());
}

/// A child process started by this program and still running (or exited
/// but not yet joined).
///
/// # Examples
///
/// ```
/// use pproc::{parallel, ChildInfo};
///
/// #[parallel]
/// fn idle(ch: pproc::Channel) {
///     let _ = ch.recv(); // until the parent closes its end
/// }
///
/// # fn main() -> pproc::Result<()> {
/// let h = idle::start()?;
/// let info = ChildInfo { pid: h.pid(), name: idle::NAME.to_owned() };
/// assert!(pproc::children().contains(&info));
/// h.close();
/// h.join()?; // joined: no longer listed
/// assert!(!pproc::children().contains(&info));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildInfo {
    /// Its process id.
    pub pid: u32,
    /// The registered name of the function it runs: a `#[parallel]`
    /// function's path, `"pproc::__worker"` for a reused worker,
    /// `"pproc::create"` for a forked closure.
    pub name: String,
}

/// A process in the tree below this one, from [`tree`].
///
/// # Examples
///
/// ```
/// use pproc::{parallel, Channel, Node};
///
/// #[parallel]
/// fn idle(ch: Channel) {
///     let _ = ch.recv(); // until its parent closes its end
/// }
///
/// /// Starts a child of its own and tells its pid, then waits.
/// #[parallel]
/// fn outer(ch: Channel<u32>) {
///     let inner = idle::start().unwrap();
///     ch.send(&inner.pid()).unwrap();
///     let _ = ch.recv();
/// }
///
/// # fn main() -> pproc::Result<()> {
/// let h = outer::start()?;
/// let grandchild = h.recv()?;
/// let tree = pproc::tree();
/// assert!(tree.contains(&Node { pid: h.pid(), name: outer::NAME.to_owned(), level: 0 }));
/// assert!(tree.contains(&Node { pid: grandchild, name: idle::NAME.to_owned(), level: 1 }));
/// h.close(); // `outer` returns, and its own child goes with it
/// h.join()?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// Its process id.
    pub pid: u32,
    /// The registered name of the function it runs, for pproc children; the
    /// command name (`/proc/<pid>/comm`) for other processes.
    pub name: String,
    /// Its depth: 0 for this process's own children, 1 for theirs, ...
    pub level: usize,
}

/// The children this process started with pproc that have not been joined
/// or dropped yet (concurrence's `Tasklet.children`), by pid.
///
/// # Examples
///
/// ```
/// use pproc::parallel;
///
/// #[parallel]
/// fn idle(ch: pproc::Channel) {
///     let _ = ch.recv(); // until the parent closes its end
/// }
///
/// # fn main() -> pproc::Result<()> {
/// let h = idle::start()?;
/// let pid = h.pid();
/// assert!(pproc::children().iter().any(|c| c.pid == pid && c.name == idle::NAME));
/// drop(h); // kills and reaps it
/// assert!(pproc::children().iter().all(|c| c.pid != pid));
/// # Ok(())
/// # }
/// ```
#[must_use]
pub fn children() -> Vec<ChildInfo> {
    live()
        .iter()
        .map(|(pid, name)| ChildInfo {
            pid: pid.cast_unsigned(),
            name: name.clone(),
        })
        .collect()
}

/// Every live process below this one, in tree order (concurrence's
/// `Tasklet.tree`): each child, then its descendants, each with its depth.
///
/// This process's own children are the ones [`children`] reports;
/// their descendants are found through `/proc`, and named by the function
/// they run when they are pproc children, by their command name otherwise.
#[must_use]
pub fn tree() -> Vec<Node> {
    let ours = children();
    let parents = proc_parents();
    let mut out = Vec::new();
    for child in ours {
        out.push(Node {
            pid: child.pid,
            name: child.name,
            level: 0,
        });
        descend(child.pid, 1, &parents, &mut out);
    }
    out
}

fn descend(pid: u32, level: usize, parents: &[(u32, u32)], out: &mut Vec<Node>) {
    for (child, _) in parents.iter().filter(|(_, parent)| *parent == pid) {
        if !is_alive(*child) {
            continue;
        }
        out.push(Node {
            pid: *child,
            name: proc_name(*child),
            level,
        });
        descend(*child, level + 1, parents, out);
    }
}

/// `(pid, parent pid)` of every process in `/proc`.
fn proc_parents() -> Vec<(u32, u32)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut all: Vec<(u32, u32)> = dir
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, stat_field(pid, 1)?.parse().ok()?)))
        .collect();
    all.sort_unstable();
    all
}

/// Field `n` after the command name of `/proc/<pid>/stat` (0 is the state).
fn stat_field(pid: u32, n: usize) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields follow the
    // last `)`.
    Some(
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(n)?
            .to_owned(),
    )
}

fn is_alive(pid: u32) -> bool {
    stat_field(pid, 0).is_some_and(|state| state != "Z" && state != "X")
}

/// The function a pproc child runs, from the dispatch variable it was
/// started with (`/proc/<pid>/environ` keeps the initial environment), or
/// the command name.
fn proc_name(pid: u32) -> String {
    let from_env = std::fs::read(format!("/proc/{pid}/environ"))
        .ok()
        .and_then(|env| {
            env.split(|b| *b == 0)
                .find_map(|var| var.strip_prefix(format!("{}=", crate::wire::spec::ENV).as_bytes()))
                .and_then(|spec| std::str::from_utf8(spec).ok())
                .and_then(|spec| spec.splitn(5, ' ').nth(4))
                .map(str::to_owned)
        });
    from_env.unwrap_or_else(|| {
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .map(|comm| comm.trim_end().to_owned())
            .unwrap_or_default()
    })
}

/// The process that started this one, when this process runs as a pproc
/// child (concurrence's `Tasklet.parent`); `None` in a program started any
/// other way.
#[must_use]
pub fn parent() -> Option<u32> {
    PARENT.get().copied()
}

/// Waits until every child this process started with pproc has exited
/// (pprocess's `waitall`), at most `timeout` (`None`: as long as it takes).
///
/// The children are not reaped: their handles still report how each ended.
/// Workers of a live [`Pool`](crate::Pool) or exchange run until it is
/// dropped, so wait for those through their owners instead.
///
/// # Errors
///
/// [`Error::Timeout`] if a child is still running at the deadline; it is
/// left running. [`Error::Io`] if polling fails.
pub fn waitall(timeout: Option<Duration>) -> Result<()> {
    let deadline = timeout.map_or(Deadline::Never, Deadline::after);
    // Opened under the lock: every pid in it is still our unreaped child.
    let mut pidfds: Vec<OwnedFd> = {
        let live = live();
        live.keys()
            .filter_map(|pid| pidfd_open(Pid::from_raw(*pid)))
            .collect()
    };
    while !pidfds.is_empty() {
        let mut fds: Vec<PollFd<'_>> = pidfds
            .iter()
            .map(|fd| PollFd::new(fd.as_fd(), PollFlags::POLLIN))
            .collect();
        if !poll_until(&mut fds, deadline)? {
            return Err(Error::Timeout);
        }
        let exited: Vec<bool> = fds
            .iter()
            .map(|fd| fd.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        let mut exited = exited.into_iter();
        pidfds.retain(|_| !exited.next().unwrap_or(false));
    }
    Ok(())
}
