#!/usr/bin/env bash
# start-slurm.sh: a one-node Slurm cluster on this machine, from nothing, idempotently.
#
#   munged -> mariadbd -> slurmdbd -> slurmctld -> slurmd, then waits (bounded) until the node is idle.
#
# Installs what is missing from Debian's archive (munge slurmctld slurmd slurm-client, and for
# accounting slurmdbd mariadb-server), writes /etc/slurm/slurm.conf (+ cgroup.conf, slurmdbd.conf),
# keeps every state, pid and log file under $SLURM_TEST_BASE (default /tmp/slurm), and starts only
# the daemons not already running (checked by their PID files). The PID files of the daemons it
# started are listed in $SLURM_TEST_BASE/run/started, which stop-slurm.sh reads.
#
# Accounting (slurmdbd on MariaDB) is on by default: without it `sacct` fails, and submitit, which
# polls sacct, never learns that a job ended without writing its result (scancel, a job killed or
# failed outside Python): the launching process then waits forever. SLURM_ACCOUNTING=0 leaves it out.
#
# Environment: SLURM_TEST_BASE (/tmp/slurm), SLURM_PARTITION (debug), SLURM_START_TIMEOUT (90 s),
#              SLURM_INSTALL_TIMEOUT (600 s, for apt-get), SLURM_ACCOUNTING (1)
set -euo pipefail

BASE=${SLURM_TEST_BASE:-/tmp/slurm}
PARTITION=${SLURM_PARTITION:-debug}
TIMEOUT=${SLURM_START_TIMEOUT:-90}
INSTALL_TIMEOUT=${SLURM_INSTALL_TIMEOUT:-600}
ACCOUNTING=${SLURM_ACCOUNTING:-1}
CLUSTER=local
HOST=$(hostname -s)
RUN=$BASE/run LOG=$BASE/log
STARTED=$RUN/started
DB_SOCK=/run/mysqld/mysqld.sock       # the MariaDB client's default: slurmdbd finds it as "localhost"
DB_PASS=slurm-test-only               # a throwaway DB on a unix socket, no network (skip-networking)
T0=$(date +%s.%N)
DEADLINE=$(( $(date +%s) + TIMEOUT ))

say() { echo "start-slurm: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }
elapsed() { echo "$(date +%s.%N) $T0" | awk '{printf "%.2f", $1 - $2}'; }

# alive PIDFILE NAME: the process in PIDFILE runs (not a zombie) and its name is NAME, so a
# stale PID file whose number was reused by another process is not taken for the daemon.
alive() {
    local pid
    pid=$(cat "$1" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ -r /proc/$pid/status ]] || return 1
    grep -q '^State:[[:space:]]*[ZX]' "/proc/$pid/status" && return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$2" ]]
}
started() { grep -qxF "$1" "$STARTED" 2>/dev/null || echo "$1" >> "$STARTED"; }
# wait_for WHAT CMD...: run CMD until it succeeds, at most until the deadline
wait_for() {
    local what=$1; shift
    until "$@" >/dev/null 2>&1; do
        (( $(date +%s) < DEADLINE )) || die "$what not up within ${TIMEOUT}s (logs: $LOG)"
        sleep 0.2
    done
}

[[ $(id -u) == 0 ]] || die "run as root"
mkdir -p "$BASE/state" "$BASE/spool" "$RUN" "$LOG"
touch "$STARTED"

# ---- packages ---------------------------------------------------------------------------------
pkgs=(munge slurmctld slurmd slurm-client)
[[ $ACCOUNTING == 1 ]] && pkgs+=(slurmdbd mariadb-server)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if (( ${#missing[@]} )); then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    command -v apt-get >/dev/null || die "no apt-get to install ${missing[*]} with"
    apt() { timeout "$INSTALL_TIMEOUT" apt-get "$@" >>"$LOG/apt.log" 2>&1; }
    : >"$LOG/apt.log"
    apt install -y -q --no-install-recommends "${missing[@]}" \
        || { apt update -q && apt install -y -q --no-install-recommends "${missing[@]}"; } \
        || die "apt-get install failed: $LOG/apt.log"
    say "installed in $(elapsed)s"
    DEADLINE=$(( $(date +%s) + TIMEOUT ))     # the bound is for starting, not for the download
fi

# ---- configuration ----------------------------------------------------------------------------
# The node as slurmd sees it (CPUs, sockets, cores, threads, RealMemory), without the UpTime line.
NODE=$(slurmd -C | head -1)
[[ $NODE == NodeName=$HOST* ]] || die "slurmd -C says '$NODE', expected NodeName=$HOST"
if [[ $ACCOUNTING == 1 ]]; then
    ACCT="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost"
else
    ACCT="AccountingStorageType=accounting_storage/none"
fi
mkdir -p /etc/slurm
CONF=$(cat <<EOF
# written by start-slurm.sh: a one-node test cluster, no cgroups, no systemd
ClusterName=$CLUSTER
SlurmctldHost=$HOST
AuthType=auth/munge
# a requeued job waits cred_expire seconds before it may start again (default 120): 10 for tests
AuthInfo=cred_expire=10
CryptoType=crypto/munge
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$BASE/state
SlurmdSpoolDir=$BASE/spool
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
MailProg=/bin/true
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
$ACCT
SchedulerType=sched/backfill
# look at pending jobs every 2 s, not every 60 (30 for backfill): a requeued job starts again soon
# after its credential expired, not a minute later
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
# a job asking for more than the node has is refused by sbatch, instead of pending for ever
EnforcePartLimits=ALL
# preemption, for tests: a job in partition "high" preempts (requeues) jobs of $PARTITION,
# which get SIGTERM and GraceTime seconds before SIGKILL. (PreemptMode=OFF on "high" would keep
# its jobs from preempting any: Slurm 22.05 then never preempts.)
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
$NODE State=UNKNOWN
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP PriorityTier=1 GraceTime=30
PartitionName=high Nodes=$HOST MaxTime=INFINITE State=UP PriorityTier=2
EOF
)
# written only when it changes, so a running cluster is not told its config changed
if [[ "$(cat /etc/slurm/slurm.conf 2>/dev/null)" != "$CONF" ]]; then
    [[ -f /etc/slurm/slurm.conf && ! -f /etc/slurm/slurm.conf.orig ]] && cp -p /etc/slurm/slurm.conf /etc/slurm/slurm.conf.orig
    printf '%s\n' "$CONF" > /etc/slurm/slurm.conf
    CONF_CHANGED=1
fi
# proctrack/linuxproc and task/none load no cgroup plugin; this keeps slurmd off systemd if one does
printf 'CgroupPlugin=autodetect\nIgnoreSystemd=yes\n' > /etc/slurm/cgroup.conf

# ---- munge --------------------------------------------------------------------------------------
if [[ ! -s /etc/munge/munge.key ]]; then
    say "creating the munge key"
    install -d -o munge -g munge -m 0700 /etc/munge
    if command -v mungekey >/dev/null; then mungekey --create --force --keyfile=/etc/munge/munge.key
    else create-munge-key -f; fi
    chown munge:munge /etc/munge/munge.key; chmod 0400 /etc/munge/munge.key
fi
install -d -o munge -g munge -m 0755 /run/munge
MUNGE_PID=/run/munge/munged.pid
if alive "$MUNGE_PID" munged; then
    say "munged already running (pid $(cat $MUNGE_PID))"
else
    rm -f /run/munge/munge.socket.2.lock
    runuser -u munge -- /usr/sbin/munged --force --pid-file="$MUNGE_PID"
    started "$MUNGE_PID"
fi
wait_for munged bash -c 'munge -n | unmunge'

# ---- accounting: MariaDB + slurmdbd --------------------------------------------------------------
if [[ $ACCOUNTING == 1 ]]; then
    DB_DIR=$BASE/mysql DB_PID=$BASE/mysql/mariadbd.pid
    install -d -o mysql -g mysql "$DB_DIR" /run/mysqld
    if alive "$DB_PID" mariadbd; then
        say "mariadbd already running (pid $(cat $DB_PID))"
    elif mariadb -S "$DB_SOCK" -e 'select 1' >/dev/null 2>&1; then
        say "a MariaDB not started here answers on $DB_SOCK: using it"
    else
        if [[ ! -d $DB_DIR/data/mysql ]]; then
            mariadb-install-db --user=mysql --datadir="$DB_DIR/data" --skip-test-db \
                >"$LOG/mariadb-install.log" 2>&1 || die "mariadb-install-db failed: $LOG/mariadb-install.log"
        fi
        setsid /usr/sbin/mariadbd --user=mysql --datadir="$DB_DIR/data" --socket="$DB_SOCK" \
            --pid-file="$DB_PID" --log-error="$DB_DIR/mariadb.log" --skip-networking \
            --innodb-buffer-pool-size=64M --innodb-log-file-size=16M </dev/null >/dev/null 2>&1 &
        wait_for mariadbd mariadb -S "$DB_SOCK" -e 'select 1'
        wait_for "mariadbd pid file" alive "$DB_PID" mariadbd
        started "$DB_PID"
    fi
    mariadb -S "$DB_SOCK" -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"

    DBD_CONF=$(cat <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageLoc=slurm_acct_db
StorageUser=slurm
StoragePass=$DB_PASS
LogFile=$LOG/slurmdbd.log
PidFile=$RUN/slurmdbd.pid
EOF
)
    printf '%s\n' "$DBD_CONF" > /etc/slurm/slurmdbd.conf
    chmod 600 /etc/slurm/slurmdbd.conf
    if alive "$RUN/slurmdbd.pid" slurmdbd; then
        say "slurmdbd already running (pid $(cat $RUN/slurmdbd.pid))"
    else
        slurmdbd
        started "$RUN/slurmdbd.pid"
    fi
    wait_for slurmdbd sacctmgr -n show cluster
    sacctmgr -n -P show cluster format=cluster | grep -qx "$CLUSTER" \
        || sacctmgr -i add cluster "$CLUSTER" >/dev/null
fi

# ---- slurmctld, slurmd -----------------------------------------------------------------------------
if alive "$RUN/slurmctld.pid" slurmctld; then
    say "slurmctld already running (pid $(cat $RUN/slurmctld.pid))"
    [[ ${CONF_CHANGED:-0} == 1 ]] && { say "slurm.conf changed: scontrol reconfigure"; scontrol reconfigure; }
else
    slurmctld
    started "$RUN/slurmctld.pid"
fi
wait_for slurmctld scontrol ping
if alive "$RUN/slurmd.pid" slurmd; then
    say "slurmd already running (pid $(cat $RUN/slurmd.pid))"
else
    slurmd
    started "$RUN/slurmd.pid"
fi

# ---- the node up --------------------------------------------------------------------------------
while :; do
    state=$(sinfo -h -n "$HOST" -p "$PARTITION" -o %T 2>/dev/null || true)
    case $state in
        idle|mixed|allocated|completing) break ;;
        down*|drain*|drained*)   # left down by an earlier unclean stop: ReturnToService=2 or a resume
            scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    (( $(date +%s) < DEADLINE )) || die "node $HOST is '${state:-?}' after ${TIMEOUT}s (logs: $LOG)"
    sleep 0.2
done
say "cluster up in $(elapsed)s: node $HOST $state, partition $PARTITION (default), accounting $([[ $ACCOUNTING == 1 ]] && echo on || echo off)"
sinfo
