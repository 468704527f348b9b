#!/usr/bin/env bash
# Bring up a single-node Slurm cluster on this machine (munge + slurmctld + slurmd, partition
# `debug`), for tests/test_slurm.py. Debian 12, as root. Idempotent: when the node is already
# idle it returns at once; otherwise it installs what is missing (apt-get), (re)writes
# /etc/slurm/slurm.conf, (re)starts the daemons and waits for the node.
#
# Exit 0 when `sinfo` shows the node idle (or mixed/allocated: it is up); non-zero with a
# one-line reason on stderr when the cluster cannot come up. Logs: /var/log/slurm/*.log.
set -uo pipefail

die() { echo "slurm_up: $*" >&2; exit 1; }
say() { echo "slurm_up: $*" >&2; }

export PATH="$PATH:/usr/sbin:/sbin"
[ "$(id -u)" = 0 ] || die "must run as root (installs packages, starts daemons)"

node_up() {
    # One node line, state idle/mixed/allocated/completing (a trailing * means not responding).
    local state
    state=$(timeout 5 sinfo -h -N -o '%t' 2>/dev/null | head -n1) || return 1
    case "$state" in idle|mix|alloc|comp) return 0 ;; *) return 1 ;; esac
}

pids_of() {  # live processes with this exact name (/proc only: procps may be absent; zombies left
    local f line comm state  # by a container init that does not reap do not count)
    for f in /proc/[0-9]*/stat; do
        read -r line 2>/dev/null <"$f" || continue
        comm=${line#*(}; comm=${comm%)*}
        state=${line##*) }; state=${state%% *}
        [ "$comm" = "$1" ] && [ "$state" != Z ] && [ "$state" != X ] && echo "${line%% *}"
    done
    return 0
}
running() { [ -n "$(pids_of "$1")" ]; }

MARK="# Single-node test cluster written by .ci/slurm_up.sh"
node=$(hostname -s)
desired_conf() {  # slurm.conf for this machine (needs slurmd installed)
    local hw
    # `slurmd -C` prints this machine's NodeName/CPUs/Sockets/.../RealMemory line; keep the hardware fields.
    hw=$(slurmd -C 2>/dev/null | head -n1 | tr ' ' '\n' \
         | grep -E '^(CPUs|Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore|RealMemory)=' | tr '\n' ' ')
    [ -n "$hw" ] || hw="CPUs=$(nproc) "
    cat <<EOF
${MARK}
ClusterName=lrfr-ci
SlurmctldHost=${node}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
EnforcePartLimits=ALL
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MailProg=/bin/true
KillWait=30
MinJobAge=30
InactiveLimit=0
Waittime=0
NodeName=${node} NodeAddr=127.0.0.1 ${hw}State=UNKNOWN
PartitionName=debug Nodes=${node} Default=YES MaxTime=INFINITE State=UP
EOF
}

ours=0
[ -f /etc/slurm/slurm.conf ] && head -n1 /etc/slurm/slurm.conf | grep -qxF "$MARK" && ours=1

if command -v sinfo >/dev/null 2>&1 && node_up; then
    # Our own cluster is only up if its daemons are (sinfo lags a killed slurmd by minutes) and
    # its config is the current one.
    if [ $ours = 0 ] || { running slurmctld && running slurmd && running munged \
            && [ "$(cat /etc/slurm/slurm.conf)" = "$(desired_conf)" ]; }; then
        say "already up: $(timeout 5 sinfo -h -N -o '%N %P %t' | head -n1)"
        exit 0
    fi
fi
if [ -f /etc/slurm/slurm.conf ] && [ $ours = 0 ]; then
    die "/etc/slurm/slurm.conf exists and was not written by this script: not touching that cluster"
fi

# ---------------------------------------------------------------- packages
PKGS=(munge slurmctld slurmd slurm-client)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    command -v apt-get >/dev/null || die "apt-get not found: install ${missing[*]} by hand"
    say "installing ${missing[*]} (apt-get) ..."
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null 2>&1 || say "apt-get update failed (trying the cached lists)"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/tmp/slurm_up.apt.log 2>&1 \
        || die "apt-get install ${missing[*]} failed (see /tmp/slurm_up.apt.log: $(tail -n1 /tmp/slurm_up.apt.log))"
fi
for b in munged slurmctld slurmd sinfo sbatch squeue scancel scontrol; do
    command -v "$b" >/dev/null || [ -x "/usr/sbin/$b" ] || die "$b missing after install"
done

systemd=0  # booted with systemd (sd_booted's test); a container without it gets the daemons started directly
[ -d /run/systemd/system ] && [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ] && systemd=1

# ---------------------------------------------------------------- munge
mkdir -p /etc/munge /var/lib/munge /var/log/munge /run/munge
if [ ! -s /etc/munge/munge.key ]; then
    if command -v mungekey >/dev/null; then
        mungekey --create --keyfile=/etc/munge/munge.key >/dev/null 2>&1 \
            || dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
    else
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
    fi
fi
chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge /run/munge
chmod 0700 /etc/munge /var/lib/munge /var/log/munge
chmod 0755 /run/munge
chmod 0400 /etc/munge/munge.key

if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    if [ $systemd = 1 ]; then
        systemctl restart munge >/dev/null 2>&1 || true
    else
        [ -f /run/munge/munged.pid ] && kill "$(cat /run/munge/munged.pid)" 2>/dev/null
        rm -f /run/munge/munged.pid /run/munge/munge.socket.2*
        runuser -u munge -- /usr/sbin/munged >/dev/null 2>&1 \
            || /usr/sbin/munged --force >/dev/null 2>&1 || true
    fi
    for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1 || die "munged does not answer (see /var/log/munge/munged.log)"
fi

# ---------------------------------------------------------------- slurm.conf
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/slurm
conf=$(desired_conf)
changed=0
if [ ! -f /etc/slurm/slurm.conf ] || [ "$(cat /etc/slurm/slurm.conf)" != "$conf" ]; then
    printf '%s\n' "$conf" >/etc/slurm/slurm.conf
    changed=1
fi

# ---------------------------------------------------------------- daemons
stop_daemon() {  # stop our own daemon (by name) and wait until it is gone (slurmctld saves state first)
    local pids end
    pids=$(pids_of "$1")
    [ -n "$pids" ] || return 0
    kill $pids 2>/dev/null
    end=$((SECONDS + 20))
    while running "$1"; do
        if [ $SECONDS -ge $end ]; then
            # shellcheck disable=SC2046  # one argument per pid
            kill -9 $(pids_of "$1") 2>/dev/null
            sleep 1
            running "$1" && die "$1 does not stop (pids $pids)"
        fi
        sleep 0.2
    done
}

if [ $systemd = 1 ]; then
    if [ $changed = 1 ] || ! systemctl is-active -q slurmctld || ! systemctl is-active -q slurmd; then
        systemctl restart slurmctld slurmd >/dev/null 2>&1 \
            || die "systemctl restart slurmctld slurmd failed (journalctl -u slurmctld -u slurmd)"
    fi
else
    if [ $changed = 1 ]; then
        stop_daemon slurmd
        stop_daemon slurmctld
    fi
    if ! running slurmctld; then
        slurmctld >/dev/null 2>&1 \
            || die "slurmctld does not start (/var/log/slurm/slurmctld.log: $(tail -n1 /var/log/slurm/slurmctld.log 2>/dev/null))"
    fi
    end=$((SECONDS + 20))
    until timeout 5 scontrol ping 2>/dev/null | grep -q UP; do
        [ $SECONDS -lt $end ] \
            || die "slurmctld does not answer (/var/log/slurm/slurmctld.log: $(tail -n1 /var/log/slurm/slurmctld.log 2>/dev/null))"
        sleep 0.2
    done
    if ! running slurmd; then
        slurmd >/dev/null 2>&1 \
            || die "slurmd does not start (/var/log/slurm/slurmd.log: $(tail -n1 /var/log/slurm/slurmd.log 2>/dev/null))"
    fi
fi

# Wait for the node; one that was down/drained (an earlier failed start) comes back to service.
end=$((SECONDS + 30))
until node_up; do
    if [ $SECONDS -ge $end ]; then
        die "node $node is not idle after 30 s (sinfo: $(timeout 5 sinfo -h -N -o '%N %t %E' 2>&1 | head -n1); logs in /var/log/slurm/)"
    fi
    state=$(timeout 5 sinfo -h -N -o '%t' 2>/dev/null | head -n1)
    case "$state" in
        down*|drain*|drng*|fail*) timeout 5 scontrol update NodeName="$node" State=RESUME >/dev/null 2>&1 ;;
    esac
    sleep 0.3
done
say "up: $(timeout 5 sinfo -h -N -o '%N %P %t' | head -n1)"
exit 0
