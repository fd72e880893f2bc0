#!/usr/bin/env bash
# A private OpenSSH server for tests of remote children on one machine.
#
#   bash ci/scaleout/setup-sshd.sh           # host "node-a": sshd on 127.0.0.1:$PORT
#   bash ci/scaleout/setup-sshd.sh --netns   # also host "node-b": a network + UTS
#                                            # namespace with its own address, hostname
#                                            # and sshd, whose link a test can cut
#   bash ci/scaleout/setup-sshd.sh --stop    # stop what this script started
#
# Then:  ssh -F "$STATE/ssh_config" node-a true
#        ssh -F "$STATE/ssh_config" node-b hostname        # prints node-b
# Cut:   ip -n pproc-b link set pproc-vb down   (restore: ... up)
#
# State: $STATE = ${PPROC_SCALEOUT_DIR:-${TMPDIR:-/tmp}/pproc-scaleout}/sshd holds the
# keys, sshd_config-{a,b}, ssh_config, logs and pid files. Nothing under /etc changes;
# the only system-wide things made are /run/sshd (sshd's privilege-separation directory)
# and, with --netns, the namespace pproc-b and the veth pair pproc-va/pproc-vb.
#
# Idempotent and safe to run from several processes at once (flock on
# $BASE/sshd.lock): a second run reuses keys and running daemons, restarts a daemon
# whose configuration changed, and brings a cut link back up. It never installs
# anything: see ci/scaleout/install.sh.
#
# The remote shell starts bare: each sshd runs in a private mount namespace where the
# login user's ~/.bashrc and ~/.zshenv and /etc/bash.bashrc read as empty, because bash
# sources them for every ssh command, however short (0.3 s and output on some
# machines). PPROC_SSHD_BARE_RC=0 keeps them.
#
# Exit status: 0 ready; 1 failed (one line says why); 2 usage; 3 software missing;
# 4 --netns asked but namespaces are not possible here (node-a alone still works).
set -euo pipefail

BASE=${PPROC_SCALEOUT_DIR:-${TMPDIR:-/tmp}/pproc-scaleout}
STATE=$BASE/sshd
PORT=${PPROC_SSHD_PORT:-42222} # node-a listens on 127.0.0.1:$PORT, node-b on $B_ADDR:22
BARE_RC=${PPROC_SSHD_BARE_RC:-1}
NS=pproc-b                     # network namespace of node-b
A_ADDR=10.231.0.1              # root-namespace end of the veth pair
B_ADDR=10.231.0.2              # node-b's address
VETH_A=pproc-va VETH_B=pproc-vb
SSHD=/usr/sbin/sshd
ME=setup-sshd.sh

fail() { echo "$ME: $*" >&2; exit 1; }
missing() { echo "$ME: $*" >&2; exit 3; }
# last_line FILE...: the last non-empty line of these files, for an error message.
last_line() { cat "$@" 2>/dev/null | grep . | tail -n1 || true; }

# alive PIDFILE: the pid in it runs sshd (not a reused pid after a reboot).
alive() {
  local pid
  [[ -s $1 ]] && pid=$(<"$1") && [[ $pid =~ ^[0-9]+$ ]] &&
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == sshd ]]
}

# in_netns PIDFILE: that daemon runs in the namespace that $NS names now, not in one
# left behind when the name was deleted and made again.
in_netns() {
  [[ $(stat -L -c %i "/proc/$(<"$1")/ns/net" 2>/dev/null) == "$(stat -L -c %i "/run/netns/$NS" 2>/dev/null)" ]]
}

# put FILE: writes stdin to FILE atomically if it differs; status 0 when it changed.
put() {
  local tmp=$1.tmp.$$
  cat >"$tmp"
  if cmp -s "$tmp" "$1"; then rm -f "$tmp"; return 1; fi
  mv -f "$tmp" "$1"
}

# kill_wait PIDFILE: stops that sshd and waits until it is gone.
kill_wait() {
  local pid
  if alive "$1"; then
    pid=$(<"$1")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    echo "stopped sshd pid $pid"
  fi
  rm -f "$1"
}

case ${1:-} in
  '' | --netns | --stop) ;;
  *) echo "usage: $ME [--netns | --stop]" >&2; exit 2 ;;
esac
command -v flock >/dev/null || missing "no flock here (apt-get install util-linux)"
mkdir -p "$BASE" "$STATE"
chmod 700 "$STATE"
exec 9>"$BASE/sshd.lock"
flock -w 120 9 || fail "another setup-sshd.sh held $BASE/sshd.lock for 2 minutes"

if [[ ${1:-} == --stop ]]; then
  kill_wait "$STATE/sshd-a.pid"
  kill_wait "$STATE/sshd-b.pid"
  if [[ -e /run/netns/$NS ]]; then
    # Sessions of node-b's sshd live on in the namespace: end them with it.
    for pid in $(ip netns pids "$NS" 2>/dev/null); do kill "$pid" 2>/dev/null || true; done
    ip netns del "$NS" && echo "removed netns $NS"
  fi
  ip link del "$VETH_A" 2>/dev/null || true
  exit 0
fi
WANT_NETNS=0
[[ ${1:-} == --netns ]] && WANT_NETNS=1

# 1. What this needs, checked before anything starts.
if [[ ! -x $SSHD ]] || ! command -v ssh >/dev/null || ! command -v ssh-keygen >/dev/null; then
  missing "no sshd here (bash ci/scaleout/install.sh, or apt-get install openssh-server openssh-client)"
fi
USER_NAME=$(id -un)
IFS=: read -r _ _ _ _ _ USER_HOME USER_SHELL < <(getent passwd "$USER_NAME") ||
  fail "user $USER_NAME has no passwd entry: sshd cannot log it in"
case $USER_SHELL in
  */nologin | */false) fail "user $USER_NAME has the shell $USER_SHELL: sshd cannot run commands as it" ;;
esac
if ((WANT_NETNS)); then
  for tool in ip unshare; do
    command -v $tool >/dev/null ||
      { echo "$ME: no second host: no $tool here (apt-get install iproute2 util-linux)" >&2; exit 4; }
  done
  if [[ $(id -u) != 0 ]] || ! unshare --net --uts --mount true 2>/dev/null; then
    echo "$ME: no second host: namespaces need root (CAP_NET_ADMIN, CAP_SYS_ADMIN) here" >&2
    exit 4
  fi
fi
if ((BARE_RC)) && ! unshare --mount true 2>/dev/null; then
  echo "$ME: note: no private mount namespace here, so the remote shell reads its rc files" >&2
  BARE_RC=0
fi
if [[ ! -d /run/sshd ]]; then
  mkdir -p /run/sshd 2>/dev/null || fail "cannot make /run/sshd, which sshd needs (run as root)"
fi

# 2. Keys and configuration, made once; files others read are replaced atomically.
for key in host_ed25519 id_ed25519; do
  if [[ ! -s $STATE/$key || ! -s $STATE/$key.pub ]]; then
    rm -f "$STATE/$key" "$STATE/$key.pub"
    ssh-keygen -q -t ed25519 -N '' -C "pproc-$key" -f "$STATE/$key" </dev/null
  fi
done
put "$STATE/authorized_keys" <"$STATE/id_ed25519.pub" || true
chmod 600 "$STATE/authorized_keys"

# write_sshd_config LISTEN-ADDRESS PORT PID-FILE
write_sshd_config() {
  cat <<EOF
# Written by ci/scaleout/setup-sshd.sh: edits are overwritten.
ListenAddress $1
Port $2
HostKey $STATE/host_ed25519
PidFile $3
AuthorizedKeysFile $STATE/authorized_keys
AuthenticationMethods publickey
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin prohibit-password
StrictModes no
# No ~/.ssh/rc, no banner, no motd: nothing runs or prints before the command.
PermitUserRC no
PermitUserEnvironment no
Banner none
PrintMotd no
PrintLastLog no
# Many agents start at once: do not drop concurrent unauthenticated connections.
MaxStartups 200:30:400
MaxSessions 64
LoginGraceTime 10
UseDNS no
X11Forwarding no
AcceptEnv PPROC_*
# scp speaks sftp since OpenSSH 9.0.
Subsystem sftp internal-sftp
LogLevel INFO
EOF
}
CHANGED_A=0 CHANGED_B=0
write_sshd_config 127.0.0.1 "$PORT" "$STATE/sshd-a.pid" | put "$STATE/sshd_config-a" && CHANGED_A=1
write_sshd_config "$B_ADDR" 22 "$STATE/sshd-b.pid" | put "$STATE/sshd_config-b" && CHANGED_B=1
check=$("$SSHD" -t -f "$STATE/sshd_config-a" 2>&1) || fail "sshd rejects its configuration: ${check##*$'\n'}"

put "$STATE/ssh_config" <<EOF || true
# Written by ci/scaleout/setup-sshd.sh: edits are overwritten.
Host node-a
  HostName 127.0.0.1
  Port $PORT
Host node-b
  HostName $B_ADDR
  Port 22
Host *
  User $USER_NAME
  IdentityFile $STATE/id_ed25519
  IdentitiesOnly yes
  IdentityAgent none
  PreferredAuthentications publickey
  PasswordAuthentication no
  KbdInteractiveAuthentication no
  # Never prompt; the host keys are this script's, and a regenerated one must not
  # stop a test: no known_hosts file is read or written.
  BatchMode yes
  StrictHostKeyChecking no
  UserKnownHostsFile /dev/null
  GlobalKnownHostsFile /dev/null
  CheckHostIP no
  UpdateHostKeys no
  # An unreachable host fails in 2 s; a dead peer is noticed in about 3 s
  # (ServerAliveInterval x ServerAliveCountMax) instead of the TCP timeout (minutes).
  ConnectTimeout 2
  ConnectionAttempts 1
  ServerAliveInterval 1
  ServerAliveCountMax 3
  # Byte streams: no tty, no escape character, no forwarding. The remote shell reads
  # no rc files (each sshd masks them), so stdout starts with the command's output.
  RequestTTY no
  EscapeChar none
  ForwardAgent no
  ForwardX11 no
  ClearAllForwardings yes
  LogLevel ERROR
EOF

# Each sshd is started by a small script of its own in $STATE, which ends in `exec sshd`,
# so the pid in the pid file is the process we started. With bare rc files it first
# binds an empty file over each rc file, in the private mount namespace it runs in.
: >"$STATE/empty-rc"
write_runner() { # $1 = hostname or ""; $2 = sshd config; $3 = log
  echo '#!/bin/sh'
  echo 'set -e'
  [[ -n $1 ]] && echo "hostname $1"
  if ((BARE_RC)); then
    echo 'mount --make-rprivate /'
    for rc in "$USER_HOME/.bashrc" "$USER_HOME/.zshenv" /etc/bash.bashrc; do
      [[ -f $rc ]] && echo "mount --bind '$STATE/empty-rc' '$rc'"
    done
  fi
  echo "exec $SSHD -D -f '$2' -E '$3'"
}

# start NAME PID-FILE CHANGED PREFIX...: starts one sshd unless it runs with the same
# configuration, and waits until it listens (sshd writes its pid file after binding).
start() {
  local name=$1 pidfile=$2 changed=$3 pid
  shift 3
  if alive "$pidfile" && ((!changed)); then
    echo "node-$name: sshd already running, pid $(<"$pidfile")"
    return
  fi
  kill_wait "$pidfile"
  : >"$STATE/sshd-$name.log"
  # No job control here, so setsid and the prefixes exec in place: $! is sshd's pid.
  # fd 9 (the lock) is not passed on.
  setsid "$@" </dev/null >>"$STATE/sshd-$name.out" 2>&1 9>&- &
  pid=$!
  for _ in $(seq 200); do
    alive "$pidfile" && break
    if ! kill -0 "$pid" 2>/dev/null; then
      wait "$pid" 2>/dev/null || true
      why=$(last_line "$STATE/sshd-$name.log" "$STATE/sshd-$name.out")
      # The port and the namespace are the machine's: a bed with another state
      # directory (another TMPDIR) may hold them.
      [[ $why == *"Cannot bind"* ]] && why+=" (port taken: by a bed under another TMPDIR? PPROC_SSHD_PORT picks another)"
      fail "node-$name: sshd exited at start: $why"
    fi
    sleep 0.025
  done
  alive "$pidfile" || fail "node-$name: sshd did not start within 5 s (see $STATE/sshd-$name.log)"
  STARTED+=("$name")
  echo "node-$name: sshd started, pid $(<"$pidfile") (bare rc: $BARE_RC)"
}
STARTED=()
MNT=()
((BARE_RC)) && MNT=(unshare --mount)

# 3. node-a: sshd on loopback.
write_runner "" "$STATE/sshd_config-a" "$STATE/sshd-a.log" | put "$STATE/run-sshd-a" && CHANGED_A=1
chmod +x "$STATE/run-sshd-a"
start a "$STATE/sshd-a.pid" "$CHANGED_A" "${MNT[@]}" "$STATE/run-sshd-a"

# 4. node-b: a network namespace joined by a veth pair, and a UTS namespace so that
#    `hostname` there says node-b. Same filesystem and pid space as node-a. Each piece
#    is checked, so that a half-made namespace or a cut link is repaired.
if ((WANT_NETNS)); then
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
  write_runner node-b "$STATE/sshd_config-b" "$STATE/sshd-b.log" | put "$STATE/run-sshd-b" && CHANGED_B=1
  alive "$STATE/sshd-b.pid" && ! in_netns "$STATE/sshd-b.pid" && CHANGED_B=1
  chmod +x "$STATE/run-sshd-b"
  start b "$STATE/sshd-b.pid" "$CHANGED_B" ip netns exec "$NS" unshare --uts "${MNT[@]}" "$STATE/run-sshd-b"
fi

# 5. A daemon just started: prove a login works, on all hosts at once.
if ((${#STARTED[@]})); then
  pids=()
  for name in "${STARTED[@]}"; do
    ssh -F "$STATE/ssh_config" "node-$name" true </dev/null >"$STATE/check-$name.out" 2>&1 &
    pids+=($!)
  done
  for i in "${!pids[@]}"; do
    wait "${pids[$i]}" ||
      fail "node-${STARTED[$i]}: sshd runs but \`ssh node-${STARTED[$i]} true\` fails: $(last_line "$STATE/check-${STARTED[$i]}.out")"
  done
fi

echo "ssh_config: $STATE/ssh_config"
echo "stop: bash $0 --stop"
