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

pub use cluster::{Cluster, HostInfo};
pub use launcher::{Binary, Launcher, Prefix, Srun, Ssh};
