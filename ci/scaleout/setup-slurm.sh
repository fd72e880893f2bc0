#!/usr/bin/env bash
# A private Slurm cluster on one machine: munged, slurmctld and slurmd, all started by
# hand in the background with every file under one state directory.
#
#   bash ci/scaleout/setup-slurm.sh          # one node, "localhost"
#   bash ci/scaleout/setup-slurm.sh --two    # nodes "node-a" and "node-b": the second
#                                            # slurmd runs in a network + UTS namespace
#                                            # with its own address and hostname
#   bash ci/scaleout/setup-slurm.sh --multi  # nodes "n1" and "n2": two slurmd on this
#                                            # host, same address, ports 17001/17002
#   bash ci/scaleout/setup-slurm.sh --stop   # stop every cluster this script started
#
# Then:  export SLURM_CONF=$STATE/<mode>/slurm.conf; srun -n1 hostname
#
# Each mode is a cluster of its own (own slurm.conf, ports, controller state), so the
# one-node and two-node clusters can run side by side and asking for one never restarts
# the other. They share one munged. Everything lives in $STATE =
# ${PPROC_SCALEOUT_DIR:-${TMPDIR:-/tmp}/pproc-scaleout}/slurm: configuration, munge key
# and socket, controller state, spool, logs, pid files. Nothing under /etc changes.
# Plugins: select/cons_tres, proctrack/linuxproc, task/none; no cgroups, no accounting.
# Auth: auth/munge with the private munged (PPROC_SLURM_AUTH=none selects auth/none,
# which Slurm 22.05 still ships).
#
# Idempotent and safe to run from several processes at once (flock on
# $BASE/slurm.lock): a second run reuses running daemons and restarts those whose
# configuration changed. It never installs anything: see ci/scaleout/install.sh.
#
# Exit status: 0 ready; 1 failed (one line says why); 2 usage; 3 software missing;
# 4 --two asked but namespaces are not possible here (--multi still works).
set -euo pipefail

BASE=${PPROC_SCALEOUT_DIR:-${TMPDIR:-/tmp}/pproc-scaleout}
STATE=$BASE/slurm
AUTH=${PPROC_SLURM_AUTH:-munge}
NS=pproc-slurm-b
A_ADDR=10.231.1.1 B_ADDR=10.231.1.2 VETH_A=pproc-sa VETH_B=pproc-sb
ME=setup-slurm.sh

fail() { echo "$ME: $*" >&2; exit 1; }
missing() { echo "$ME: $*" >&2; exit 3; }

# alive PIDFILE NAME: the pid in it runs NAME (not a reused pid after a reboot).
alive() {
  local pid
  [[ -s $1 ]] && pid=$(<"$1") && [[ $pid =~ ^[0-9]+$ ]] &&
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$2" ]]
}

# in_netns PIDFILE: that daemon runs in the namespace that $NS names now, not in one
# left behind when the name was deleted and made again.
in_netns() {
  [[ $(stat -L -c %i "/proc/$(<"$1")/ns/net" 2>/dev/null) == "$(stat -L -c %i "/run/netns/$NS" 2>/dev/null)" ]]
}

# kill_wait PIDFILE NAME: stops that daemon and waits until it is gone.
kill_wait() {
  local pid
  if alive "$1" "$2"; then
    pid=$(<"$1")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
    echo "stopped $2 pid $pid"
  fi
  rm -f "$1"
}

# last_line FILE...: the last non-empty line of these files, for an error message.
last_line() { cat "$@" 2>/dev/null | grep . | tail -n1 || true; }

# stop_mode MODE: slurmd before slurmctld, so that neither logs errors about the other.
stop_mode() {
  local f
  for f in "$STATE/$1"/slurmd-*.pid; do [[ -e $f ]] && kill_wait "$f" slurmd; done
  kill_wait "$STATE/$1/slurmctld.pid" slurmctld
}

MODE=one
case ${1:-} in
  '') ;;
  --two) MODE=two ;;
  --multi) MODE=multi ;;
  --stop) MODE=stop ;;
  *) echo "usage: $ME [--two | --multi | --stop]" >&2; exit 2 ;;
esac
command -v flock >/dev/null || missing "no flock here (apt-get install util-linux)"
mkdir -p "$BASE" "$STATE"
chmod 700 "$STATE"
exec 9>"$BASE/slurm.lock"
flock -w 120 9 || fail "another setup-slurm.sh held $BASE/slurm.lock for 2 minutes"

if [[ $MODE == stop ]]; then
  for mode in one two multi; do stop_mode $mode; done
  kill_wait "$STATE/munge/munged.pid" munged
  if [[ -e /run/netns/$NS ]]; then ip netns del "$NS" && echo "removed netns $NS"; fi
  ip link del "$VETH_A" 2>/dev/null || true
  exit 0
fi

# 1. What this needs, checked before anything starts.
for tool in slurmctld slurmd srun sinfo munged munge unmunge; do
  PATH=$PATH:/usr/sbin command -v $tool >/dev/null ||
    missing "no slurm here (bash ci/scaleout/install.sh, or apt-get install slurm-wlm munge)"
done
export PATH=$PATH:/usr/sbin
if [[ $MODE == two ]]; then
  for tool in ip nsenter unshare; do
    command -v $tool >/dev/null ||
      { echo "$ME: no second node: no $tool here (apt-get install iproute2 util-linux)" >&2; exit 4; }
  done
  if [[ $(id -u) != 0 ]] || ! unshare --net --uts true 2>/dev/null; then
    echo "$ME: no second node: namespaces need root (CAP_NET_ADMIN, CAP_SYS_ADMIN) here" >&2
    exit 4
  fi
fi
M=$STATE/$MODE
mkdir -p "$STATE/munge" "$M/ctld" "$M/spool"
chmod 700 "$STATE/munge"

# 2. munged, with a private key and socket, shared by the clusters.
if [[ $AUTH == munge ]]; then
  if [[ ! -s $STATE/munge/munge.key ]]; then
    if command -v mungekey >/dev/null; then
      mungekey --create --force --keyfile="$STATE/munge/munge.key"
    else
      head -c 1024 /dev/urandom >"$STATE/munge/munge.key"
    fi
  fi
  chmod 600 "$STATE/munge/munge.key"
  if alive "$STATE/munge/munged.pid" munged; then
    echo "munged already running, pid $(<"$STATE/munge/munged.pid")"
  else
    # A socket left by a munged that is gone (a reboot) would pass the wait below.
    rm -f "$STATE/munge/munge.sock" "$STATE/munge/munge.sock.lock"
    setsid munged --foreground --force \
      --socket="$STATE/munge/munge.sock" --key-file="$STATE/munge/munge.key" \
      --pid-file="$STATE/munge/munged.pidfile" --log-file="$STATE/munge/munged.log" \
      --seed-file="$STATE/munge/munged.seed" </dev/null >>"$STATE/munge/munged.out" 2>&1 9>&- &
    echo $! >"$STATE/munge/munged.pid"
    for _ in $(seq 200); do
      munge -n -S "$STATE/munge/munge.sock" 2>/dev/null |
        unmunge -S "$STATE/munge/munge.sock" >/dev/null 2>&1 && break
      alive "$STATE/munge/munged.pid" munged ||
        fail "munged exited at start: $(last_line "$STATE/munge/munged.log" "$STATE/munge/munged.out")"
      sleep 0.025
    done
    munge -n -S "$STATE/munge/munge.sock" 2>/dev/null | unmunge -S "$STATE/munge/munge.sock" >/dev/null 2>&1 ||
      fail "munged does not answer on $STATE/munge/munge.sock within 5 s"
    echo "munged started, pid $(<"$STATE/munge/munged.pid")"
  fi
  AUTH_LINES="AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$STATE/munge/munge.sock"
else
  AUTH_LINES="AuthType=auth/none
CredType=cred/none"
fi

# 3. slurm.conf of this mode. One node is "localhost"; two are "node-a" and "node-b"
#    (slurmctld 22.05 resolves any name to the only node when that node is called
#    localhost, so a second node after it dies with "Duplicated NodeHostName"). With
#    --two, slurmctld is reached at the veth address so that node-b can reach it too.
CPUS=$(nproc)
HOST=$(hostname -s)
case $MODE in
  one)
    CTLD_PORT=16817 SLURMD_PORT=16818 CTLD_ADDR=127.0.0.1 NODE_NAMES=(localhost)
    NODES="NodeName=localhost NodeAddr=127.0.0.1 CPUs=$CPUS State=UNKNOWN" ;;
  two)
    CTLD_PORT=16827 SLURMD_PORT=16828 CTLD_ADDR=$A_ADDR NODE_NAMES=(node-a node-b)
    NODES="NodeName=node-a NodeAddr=$A_ADDR CPUs=$CPUS State=UNKNOWN
NodeName=node-b NodeAddr=$B_ADDR CPUs=$CPUS State=UNKNOWN" ;;
  multi)
    CTLD_PORT=16837 SLURMD_PORT=16838 CTLD_ADDR=127.0.0.1 NODE_NAMES=(n1 n2)
    NODES="NodeName=n1 NodeHostname=$HOST NodeAddr=127.0.0.1 Port=17001 CPUs=1 State=UNKNOWN
NodeName=n2 NodeHostname=$HOST NodeAddr=127.0.0.1 Port=17002 CPUs=1 State=UNKNOWN" ;;
esac
export SLURM_CONF=$M/slurm.conf
cat >"$SLURM_CONF.tmp.$$" <<EOF
# Written by ci/scaleout/setup-slurm.sh: edits are overwritten.
ClusterName=pproc-$MODE
SlurmctldHost=$HOST($CTLD_ADDR)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=$(id -un)
SlurmdUser=$(id -un)
$AUTH_LINES
StateSaveLocation=$M/ctld
SlurmdSpoolDir=$M/spool/%n
SlurmctldPidFile=$M/ctld/slurmctld.pidfile
SlurmdPidFile=$M/spool/slurmd-%n.pidfile
SlurmctldLogFile=$M/slurmctld.log
SlurmdLogFile=$M/slurmd-%n.log
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
# A node that has fewer CPUs than configured is used anyway, not drained.
SlurmdParameters=config_overrides
ReturnToService=2
SlurmdTimeout=10
MessageTimeout=5
KillWait=2
InactiveLimit=0
$NODES
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
if cmp -s "$SLURM_CONF.tmp.$$" "$SLURM_CONF"; then
  rm -f "$SLURM_CONF.tmp.$$"
else
  if [[ -f $SLURM_CONF ]]; then
    echo "slurm.conf of --$MODE changed: restarting its daemons"
    stop_mode "$MODE"
  fi
  mv -f "$SLURM_CONF.tmp.$$" "$SLURM_CONF"
fi

# 4. The second node's namespace (network + UTS; same filesystem, same pid space),
#    each piece checked so that a half-made one is repaired.
if [[ $MODE == two ]]; then
  [[ -e /run/netns/$NS ]] || ip netns add "$NS"
  if ! ip -n "$NS" link show "$VETH_B" >/dev/null 2>&1; then
    ip link del "$VETH_A" 2>/dev/null || true
    ip link add "$VETH_A" type veth peer name "$VETH_B" netns "$NS"
  fi
  ip addr replace "$A_ADDR/30" dev "$VETH_A"
  ip -n "$NS" addr replace "$B_ADDR/30" dev "$VETH_B"
  ip link set "$VETH_A" up
  ip -n "$NS" link set "$VETH_B" up
  ip -n "$NS" link set lo up
  # Every address of this machine (which srun may report as its own) via the veth.
  ip -n "$NS" route replace default via "$A_ADDR"
fi

# 5. Daemons, in the foreground (-D) so that the pid we record is the daemon's (no job
#    control here, so setsid and the prefixes exec in place). fd 9, the lock, stays here.
# start NAME LOG PIDFILE COMMAND...
start() {
  local name=$1 log=$2 pidfile=$3
  shift 3
  if alive "$pidfile" "$name"; then
    echo "$name${NODE:+ $NODE} already running, pid $(<"$pidfile")"
    return
  fi
  setsid "$@" </dev/null >>"$log" 2>&1 9>&- &
  echo $! >"$pidfile"
  echo "$name${NODE:+ $NODE} started, pid $!"
}
NODE='' start slurmctld "$M/slurmctld.out" "$M/slurmctld.pid" \
  slurmctld -D -c -f "$SLURM_CONF" # -c: a controller that was not running forgets old jobs
for NODE in "${NODE_NAMES[@]}"; do
  prefix=()
  if [[ $MODE == two && $NODE == node-b ]]; then
    # nsenter --net, not `ip netns exec`: the latter mounts a fresh /sys without the
    # cgroup mounts, and slurmd 22.05 will not start without them. `unshare --uts` +
    # `hostname` so that `srun hostname` tells the nodes apart.
    # shellcheck disable=SC2016 # $0 and $@ are the inner shell's
    prefix=(nsenter --net=/run/netns/"$NS" unshare --uts sh -c 'hostname node-b && exec "$0" "$@"')
    if alive "$M/slurmd-$NODE.pid" slurmd && ! in_netns "$M/slurmd-$NODE.pid"; then
      kill_wait "$M/slurmd-$NODE.pid" slurmd
    fi
  fi
  mkdir -p "$M/spool/$NODE"
  start slurmd "$M/slurmd-$NODE.out" "$M/slurmd-$NODE.pid" \
    "${prefix[@]}" slurmd -D -N "$NODE" -f "$SLURM_CONF"
done
NODE=

# 6. Wait until every node is up, and say which daemon died if one did.
want=${#NODE_NAMES[@]}
for _ in $(seq 150); do
  up=$(sinfo -h -N -o '%N %T' 2>/dev/null | grep -cE ' (idle|mixed|allocated|completing)$' || true)
  ((up >= want)) && break
  alive "$M/slurmctld.pid" slurmctld ||
    fail "slurmctld exited at start: $(last_line "$M/slurmctld.log" "$M/slurmctld.out")"
  for NODE in "${NODE_NAMES[@]}"; do
    alive "$M/slurmd-$NODE.pid" slurmd ||
      fail "slurmd $NODE exited at start: $(last_line "$M/slurmd-$NODE.log" "$M/slurmd-$NODE.out")"
  done
  sleep 0.2
done
((up >= want)) ||
  fail "$up of $want nodes up after 30 s: $(sinfo -h -N -o '%N %T %E' 2>&1 | tr '\n' ';')"
sinfo -N -o '%N %T %c'

echo "SLURM_CONF=$SLURM_CONF"
echo "stop: bash $0 --stop"
