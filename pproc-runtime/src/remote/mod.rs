//! Children on other hosts: a [`Launcher`] (ssh, Slurm's `srun`, any
//! command prefix) starts one agent per host, the same program, which
//! speaks pproc's frames over the launcher's standard input and output and
//! starts and supervises the children on its host with the local code.
//!
//! The agent stops its children's process groups when the link ends, when
//! it hears nothing for the host timeout, or when the process that started
//! it (sshd's session) goes, so no orphan outlives a parent on a host.
//!
//! The parent's end ([`link`]) gives each remote child a socket of its own,
//! as a local child has, and relays its frames over the host's one link;
//! the agent ([`agent`]) relays them to the child's socket there. Nothing
//! listens on a port and nothing is authenticated but by the launcher:
//! ssh's keys, Slurm's munge. What a child's end was travels in the
//! protocol, never in the launcher's exit status (ssh answers 255 for a
//! killed child and for a dead link alike).

pub(crate) mod agent;
mod binary;
mod cluster;
mod launcher;
pub(crate) mod link;
mod outgoing;
pub(crate) mod protocol;
pub(crate) mod tunnel;

pub use cluster::{Cluster, HostInfo};
pub use launcher::{Binary, Launcher, Prefix, Srun, Ssh};

/// A host's link as one end reads it, for the fuzz targets: `end` picks
/// the parent's (what a remote shell printed, the magic, the hello, then
/// the agent's frames) or the agent's (the parent's frames); `link` is the
/// other end, written and closed. Each frame is decoded as that end's
/// relay decodes it.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn fuzz_link(parent: bool, link: std::os::fd::OwnedFd) {
    use std::os::fd::AsFd;

    use crate::wire::wait::Deadline;

    if parent
        && link::skip_to_magic(
            link.as_fd(),
            Deadline::after(std::time::Duration::from_secs(1)),
        )
        .is_err()
    {
        return;
    }
    let Ok(mut conn) = crate::wire::conn::Conn::new(link) else {
        return;
    };
    conn.without_shared_memory();
    conn.set_max_frame(4096);
    while matches!(conn.fill(), Ok(n) if n > 0) {}
    if parent && !matches!(conn.with_frame(protocol::hello), Ok(Some(Some(Ok(_))))) {
        return;
    }
    while let Ok(Some(true)) =
        conn.with_frame(|frame_tag, body| protocol::Message::parse(frame_tag, body).is_some())
    {}
}
