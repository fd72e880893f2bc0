//! Many hosts at once: a [`Cluster`] names hosts with slots, and a
//! [`Builder`](crate::Builder) that has one starts each child on the host
//! with the most free slots, so that `Map`, `Queue`, `Pool` and `Exchange`
//! spread their workers over the hosts.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::launcher::{Launcher, Srun, Ssh};
use super::link;
use crate::error::{Error, Result};
use crate::lock::lock;

/// How long a host that could not be reached is passed over before it is
/// tried again.
const PASSED_OVER: Duration = Duration::from_secs(10);

/// Hosts with slots, for children to run on.
///
/// A [`Builder::cluster`](crate::Builder::cluster) starts each child on the
/// host that has the most slots free (slots minus the children running
/// there), so a `Map` or a `Pool` on it spreads its workers over the
/// hosts. A host that cannot be reached is passed over for a while and the
/// child goes to the next; children on a host that is lost end with
/// [`Error::HostLost`], and the rest of the cluster goes on. A lost call is
/// not run again elsewhere: it may have had effects.
///
/// # Examples
///
/// ```
/// use pproc::{parallel, Cluster, Map, Prefix};
///
/// #[parallel]
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// # fn main() -> pproc::Result<()> {
/// // Two agents on this host stand for two hosts here; `Ssh::new("node-a")`
/// // and `Ssh::new("node-b")` would be two machines.
/// let cluster = Cluster::new()
///     .host(Prefix::new(["env"]).host("a"), 1)
///     .host(Prefix::new(["env"]).host("b"), 2);
/// cluster.connect()?;
/// let squares: Vec<u64> = Map::new(square::call, 0..100u64)
///     .cluster(&cluster)
///     .collect::<pproc::Result<_>>()?;
/// assert_eq!(squares[9], 81);
/// assert_eq!(cluster.slots(), 3);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, Default)]
pub struct Cluster {
    hosts: Vec<Arc<Host>>,
}

/// One host of a cluster.
#[derive(Debug)]
struct Host {
    launcher: Arc<dyn Launcher>,
    slots: usize,
    /// Until when it is passed over, having failed to connect.
    passed_over: Mutex<Option<Instant>>,
}

/// What [`Cluster::hosts`] tells of one host.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HostInfo {
    /// The host, as its launcher names it.
    pub name: String,
    /// How many children it takes at once.
    pub slots: usize,
    /// Children running there now, from this process.
    pub running: usize,
    /// Whether its agent is connected.
    pub up: bool,
}

impl Cluster {
    /// A cluster of no hosts yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// One more host, reached through `launcher`, for up to `slots`
    /// children at once (at least one).
    #[must_use]
    pub fn host(mut self, launcher: impl Launcher, slots: usize) -> Self {
        self.hosts.push(Arc::new(Host {
            launcher: Arc::new(launcher),
            slots: slots.max(1),
            passed_over: Mutex::new(None),
        }));
        self
    }

    /// The hosts a hostfile names, reached with ssh: one per line, as
    /// `[user@]host[:port] [slots=N]` (one slot by default); blank lines
    /// and `#` comments are skipped. `ssh` sets up each host's [`Ssh`]
    /// further (a configuration file, options).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the file cannot be read, [`Error::Launch`] for a
    /// line that is not a host.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> pproc::Result<()> {
    /// let path = std::env::temp_dir().join(format!("pproc-hosts-{}", std::process::id()));
    /// std::fs::write(&path, "# the lab\nnode-a slots=4\nme@node-b:2222 slots=8\n").unwrap();
    /// let cluster = pproc::Cluster::from_hostfile(&path, |ssh| ssh.option("IdentitiesOnly=yes"))?;
    /// assert_eq!(cluster.slots(), 12);
    /// # std::fs::remove_file(&path).ok();
    /// # Ok(())
    /// # }
    /// ```
    pub fn from_hostfile(path: impl AsRef<Path>, ssh: impl Fn(Ssh) -> Ssh) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(Error::Io)?;
        let mut cluster = Self::new();
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let (host, slots) = parse_host_line(line).ok_or_else(|| Error::Launch {
                host: line.to_owned(),
                message: "a hostfile line is `[user@]host[:port] [slots=N]`".to_owned(),
            })?;
            let launcher = match host.rsplit_once(':') {
                Some((name, port)) => match port.parse() {
                    Ok(port) => Ssh::new(name).port(port),
                    Err(_) => Ssh::new(host),
                },
                None => Ssh::new(host),
            };
            cluster = cluster.host(ssh(launcher), slots);
        }
        Ok(cluster)
    }

    /// The nodes of the Slurm allocation this program runs in (inside
    /// `salloc` or `sbatch`), each reached with [`Srun`], with as many
    /// slots as the allocation gives it CPUs.
    ///
    /// # Errors
    ///
    /// [`Error::Launch`] outside an allocation, or where its node list
    /// cannot be read (`scontrol` expands it).
    pub fn from_slurm() -> Result<Self> {
        let missing = |what: &str| Error::Launch {
            host: "slurm".to_owned(),
            message: format!("not in a Slurm allocation: {what} is not set"),
        };
        let list =
            std::env::var("SLURM_JOB_NODELIST").map_err(|_| missing("SLURM_JOB_NODELIST"))?;
        let out = std::process::Command::new("scontrol")
            .args(["show", "hostnames", &list])
            .output()
            .map_err(|err| Error::Launch {
                host: "slurm".to_owned(),
                message: format!("cannot run `scontrol`: {err}"),
            })?;
        if !out.status.success() {
            return Err(Error::Launch {
                host: "slurm".to_owned(),
                message: format!(
                    "`scontrol show hostnames {list}` failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            });
        }
        let nodes: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::trim)
            .filter(|node| !node.is_empty())
            .map(str::to_owned)
            .collect();
        let cpus = std::env::var("SLURM_JOB_CPUS_PER_NODE")
            .ok()
            .map(|spec| cpus_per_node(&spec))
            .unwrap_or_default();
        let mut cluster = Self::new();
        for (i, node) in nodes.into_iter().enumerate() {
            let slots = cpus.get(i).copied().unwrap_or(1);
            cluster = cluster.host(Srun::new().node(node), slots);
        }
        Ok(cluster)
    }

    /// The slots of all hosts together.
    #[must_use]
    pub fn slots(&self) -> usize {
        self.hosts.iter().map(|host| host.slots).sum()
    }

    /// Starts every host's agent now, all at once (a child would start its
    /// host's otherwise). A host that cannot be reached is passed over for
    /// a while.
    ///
    /// # Errors
    ///
    /// The first host's error if no host could be reached; the hosts that
    /// could are connected all the same.
    pub fn connect(&self) -> Result<()> {
        let tried: Vec<Result<()>> = std::thread::scope(|scope| {
            let running: Vec<_> = self
                .hosts
                .iter()
                .map(|host| scope.spawn(move || host.connect()))
                .collect();
            running
                .into_iter()
                .map(|thread| thread.join().unwrap_or(Err(Error::Disconnected)))
                .collect()
        });
        if !tried.is_empty() && tried.iter().all(Result::is_err) {
            return tried.into_iter().find_map(Result::err).map_or(Ok(()), Err);
        }
        Ok(())
    }

    /// Ends the link to every host: each agent stops its children, which
    /// end with [`Error::HostLost`], and exits. A later child on a host
    /// starts its agent again.
    pub fn disconnect(&self) {
        for host in &self.hosts {
            link::disconnect(host.launcher.as_ref());
        }
    }

    /// Each host: its name, slots, children running there and whether its
    /// agent is connected.
    #[must_use]
    pub fn hosts(&self) -> Vec<HostInfo> {
        self.hosts
            .iter()
            .map(|host| {
                let (up, running) = link::state(host.launcher.as_ref());
                HostInfo {
                    name: host.launcher.host(),
                    slots: host.slots,
                    running,
                    up,
                }
            })
            .collect()
    }

    /// Runs `start` on the host with the most free slots, passing over
    /// hosts that cannot be reached, and on the next when one cannot.
    pub(crate) fn place<T>(
        &self,
        mut start: impl FnMut(&Arc<dyn Launcher>) -> Result<T>,
    ) -> Result<T> {
        let now = Instant::now();
        let mut order: Vec<(usize, &Arc<Host>)> = self
            .hosts
            .iter()
            .filter(|host| lock(&host.passed_over).is_none_or(|until| until <= now))
            .map(|host| {
                let (_, running) = link::state(host.launcher.as_ref());
                (host.slots.saturating_sub(running), host)
            })
            .collect();
        // The most free slots first; the order given breaks ties.
        order.sort_by_key(|(free, _)| std::cmp::Reverse(*free));
        let mut last = None;
        for (_, host) in order {
            match start(&host.launcher) {
                Err(err @ (Error::Launch { .. } | Error::HostLost { .. })) => {
                    *lock(&host.passed_over) = Some(Instant::now() + PASSED_OVER);
                    last = Some(err);
                }
                done => return done,
            }
        }
        Err(last.unwrap_or_else(|| Error::Launch {
            host: "cluster".to_owned(),
            message: "no host of the cluster can be reached now".to_owned(),
        }))
    }
}

impl Host {
    fn connect(&self) -> Result<()> {
        let connected = link::connect_now(&self.launcher);
        *lock(&self.passed_over) = connected.is_err().then(|| Instant::now() + PASSED_OVER);
        connected
    }
}

/// A hostfile line's host and slots.
fn parse_host_line(line: &str) -> Option<(&str, usize)> {
    let mut words = line.split_whitespace();
    let host = words.next()?;
    let mut slots = 1;
    for word in words {
        slots = word.strip_prefix("slots=")?.parse().ok()?;
    }
    Some((host, slots))
}

/// Slurm's `SLURM_JOB_CPUS_PER_NODE` (`2(x3),1`: two CPUs on each of
/// three nodes, then one), one count per node.
fn cpus_per_node(spec: &str) -> Vec<usize> {
    let mut out = Vec::new();
    for part in spec.split(',') {
        let (count, times) = match part.split_once("(x") {
            Some((count, times)) => (count, times.trim_end_matches(')')),
            None => (part, "1"),
        };
        if let (Ok(count), Ok(times)) = (count.trim().parse::<usize>(), times.trim().parse()) {
            out.extend(std::iter::repeat_n(count, times));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostfile_lines_and_slurm_cpu_lists_parse() {
        assert_eq!(parse_host_line("node-a"), Some(("node-a", 1)));
        assert_eq!(parse_host_line("me@b:22 slots=8"), Some(("me@b:22", 8)));
        assert_eq!(parse_host_line("b slots=x"), None);
        assert_eq!(parse_host_line("b cores=2"), None);
        assert_eq!(cpus_per_node("2(x3),1"), [2, 2, 2, 1]);
        assert_eq!(cpus_per_node("16"), [16]);
    }
}
