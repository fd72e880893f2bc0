#!/usr/bin/env bash
# Installs what ci/scaleout/setup-sshd.sh and setup-slurm.sh need: OpenSSH (server and
# client), Slurm (slurmctld, slurmd, the clients), munge and iproute2. Only what is
# missing is installed, with apt-get, non-interactively, and only as root; elsewhere it
# says in one line what to install and exits 1. Exits 0 when everything is there.
#
# The packages' own services are not started (a temporary policy-rc.d refuses them
# where none exists): the setup scripts run private daemons and never use the system's.
set -euo pipefail

ME=install.sh
PATH=$PATH:/usr/sbin:/sbin
need=()
[[ -x /usr/sbin/sshd ]] || need+=(openssh-server)
command -v ssh >/dev/null && command -v ssh-keygen >/dev/null || need+=(openssh-client)
for tool in slurmctld slurmd srun sinfo; do
  command -v $tool >/dev/null || { need+=(slurm-wlm); break; }
done
for tool in munged munge unmunge; do
  command -v $tool >/dev/null || { need+=(munge); break; }
done
command -v ip >/dev/null || need+=(iproute2)
command -v flock >/dev/null && command -v unshare >/dev/null && command -v nsenter >/dev/null ||
  need+=(util-linux)

if ((!${#need[@]})); then
  echo "$ME: everything is installed"
  exit 0
fi
if [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null; then
  echo "$ME: install ${need[*]} (this needs root and apt-get)" >&2
  exit 1
fi

policy=/usr/sbin/policy-rc.d
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  trap 'rm -f "$policy"' EXIT
fi
export DEBIAN_FRONTEND=noninteractive
apt=(apt-get -q -y -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
echo "$ME: installing ${need[*]}"
# A fresh image may have no package lists, or stale ones: update once if installing fails.
if ! "${apt[@]}" install --no-install-recommends "${need[@]}"; then
  "${apt[@]}" update
  "${apt[@]}" install --no-install-recommends "${need[@]}"
fi
echo "$ME: installed ${need[*]}"
