#!/usr/bin/env bash
# A single-node Slurm 22.05 cluster on localhost, for tests/test_slurm.py (and for trying
# `snakemake --profile slurm` by hand). Debian packages, run as root, no systemd, no cgroups.
#
#   cluster.sh install   apt-get the packages (slurmctld slurmd slurm-client munge slurmdbd mariadb-server)
#   cluster.sh start     start munged, mariadbd, slurmdbd, slurmctld and slurmd in the background
#   cluster.sh stop      cancel this cluster's jobs, stop exactly the daemons `start` started (by the
#                        pid files it wrote, never by name) and remove the Slurm config files it wrote
#   cluster.sh status    which of them run (exit 0 when all do)
#   cluster.sh clean     stop, then delete the state directory (database, spool, logs)
#   cluster.sh start-two-node   (after start) start the slurmds of two more nodes, node1 and node2, in
#                        partition "multi", for multi-node jobs (tests/test_slurm.py)
#   cluster.sh stop-two-node    cancel the jobs in "multi" and stop those two slurmds (stop does too)
#
# Everything but the config files (/etc/slurm/{slurm,slurmdbd,gres}.conf) lives in
# $RESNET_SLURM_STATE (default /tmp/resnet-repro-slurm): logs in log/, pid files in run/. The config
# must be /etc/slurm/slurm.conf (the plugin's job step drops SLURM_CONF before its inner srun); a
# config file there that this script did not write is never touched: start refuses instead. The
# daemons listen on 127.0.0.1 only, on ports 16817-16820, with a munge socket of their own, so a
# real munge or MariaDB on the machine is left alone.
# Cluster "resnetrepro": node "$(hostname -s)" with all its CPUs, 3/4 of its memory (16 GB at least)
# and two pretend GPUs; partition "debug" (the default); account "resnet"; sacct keeps each job's GPUs and comment.
# Two-node jobs: the config also declares node1 and node2 (the same CPUs, memory and pretend GPUs each),
# partition "multi", on this same machine: Slurm's multiple-slurmd mode (Debian's build has it:
# `scontrol show config` says MULTIPLE_SLURMD = Yes), one slurmd per node name (`slurmd -N`) on ports
# 16821 and 16822, each with its own spool directory. Their slurmds run only after `start-two-node`; until
# then the two nodes are listed as down, which leaves partition "debug" alone.
set -euo pipefail
PATH=$PATH:/usr/sbin:/sbin

STATE=${RESNET_SLURM_STATE:-/tmp/resnet-repro-slurm}
CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
DBD_CONF=$CONF_DIR/slurmdbd.conf
GRES_CONF=$CONF_DIR/gres.conf
GPUS=2
MARK="# Written by resnet-repro tests/slurm/cluster.sh (state: $STATE). Removed by 'cluster.sh stop'."
CLUSTER=resnetrepro
PARTITION=debug
ACCOUNT=resnet
CTLD_PORT=16817 SLURMD_PORT=16818 DBD_PORT=16819 DB_PORT=16820
NODE=$(hostname -s)
MUNGE_SOCKET=$STATE/munge/munge.socket
DB_SOCKET=$STATE/mysql.sock
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)        # start order; stop goes backwards
MULTI_PARTITION=multi
MULTI_NODES=(node1 node2)       # their slurmds: "daemons" slurmd-node1, slurmd-node2 (start-two-node)
MULTI_PORT0=16821               # node1's slurmd port; node2's is the next
PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)

say() { echo "cluster.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }

binary() {  # the executable each daemon runs as (what /proc/PID/exe must point to)
    case $1 in
        munged) command -v munged ;;
        mariadbd) command -v mariadbd || command -v mysqld ;;
        slurmd-*) command -v slurmd ;;
        *) command -v "$1" ;;
    esac
}

have_packages() {
    local d
    for d in "${DAEMONS[@]}" sbatch sacct sacctmgr scontrol mariadb-install-db; do
        [[ -n $(binary "$d" 2>/dev/null) ]] || return 1
    done
}

pidfile() { echo "$STATE/run/$1.pid"; }

# The pid this script recorded for a daemon, if that process still runs that daemon's binary.
running_pid() {
    local f pid exe
    f=$(pidfile "$1")
    [[ -r $f ]] || return 1
    pid=$(<"$f")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    exe=$(readlink -f "/proc/$pid/exe" 2>/dev/null) || return 1
    [[ $exe == "$(readlink -f "$(binary "$1")")" ]]
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local secs=$1 what=$2 i
    shift 2
    for ((i = 0; i < secs * 4; i++)); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.25
    done
    say "gave up waiting for $what after ${secs}s"
    return 1
}

# Start a daemon in the foreground of a new session, in the background of this script, and
# record its pid. Its output goes to log/NAME.out, never to our caller's pipes.
launch() {
    local name=$1
    shift
    if running_pid "$name"; then
        say "$name already running (pid $(<"$(pidfile "$name")"))"
        return 0
    fi
    setsid "$@" </dev/null >>"$STATE/log/$name.out" 2>&1 &
    echo $! >"$(pidfile "$name")"
    sleep 0.2
    running_pid "$name" || { tail -20 "$STATE/log/$name.out" >&2; die "$name did not start (log: $STATE/log/)"; }
}

write_owned() {  # write_owned FILE MODE: stdin to FILE, unless FILE exists and is not ours
    local file=$1 mode=$2
    if [[ -e $file ]] && ! grep -qF "# Written by resnet-repro tests/slurm/cluster.sh" "$file"; then
        die "$file exists and was not written by this script; not touching it (is this machine a real Slurm node?)"
    fi
    install -d -m 755 "$(dirname "$file")"
    local tmp
    tmp=$(mktemp "$file.XXXXXX")
    cat >"$tmp"
    chmod "$mode" "$tmp"
    mv -f "$tmp" "$file"
}

remove_owned() {
    local file=$1
    if [[ -e $file ]] && grep -qF "# Written by resnet-repro tests/slurm/cluster.sh" "$file"; then
        rm -f "$file"
    fi
}

write_configs() {
    local cpus mem_mb
    cpus=$(nproc)
    # 3/4 of the memory, but at least 16 GB (bookkeeping only: nothing enforces it here), so that
    # the slurm profile's larger requests (8 GB for a data check) fit on a small machine too
    mem_mb=$(awk '/^MemTotal:/ {m = int($2 / 1024 * 0.75); print (m < 16384 ? 16384 : m)}' /proc/meminfo)
    write_owned "$CONF" 644 <<EOF
$MARK
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
CredType=cred/munge
StateSaveLocation=$STATE/spool/slurmctld
# one slurmd per node name on this machine (multiple-slurmd mode): %n is the node's name
SlurmdSpoolDir=$STATE/spool/slurmd.%n
SlurmctldPidFile=$STATE/run/slurmctld.own.pid
SlurmdPidFile=$STATE/run/slurmd.%n.own.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.%n.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups here: track processes through /proc, no task binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=1000
ReturnToService=2
SlurmdParameters=config_overrides
# scancel/time limit: SIGTERM, then SIGKILL this many seconds later
KillWait=15
MinJobAge=300
InactiveLimit=0
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT
AccountingStoragePass=$MUNGE_SOCKET
# sacct shows GPUs (AllocTRES) and the plugin's --comment (rule and wildcards)
AccountingStorageTRES=gres/gpu
AccountingStoreFlags=job_comment
# pretend GPUs (gres.conf: device files that are copies of /dev/null): jobs that ask for --gpus
# get scheduled and see CUDA_VISIBLE_DEVICES; the trainer finds no CUDA and runs on the CPU
GresTypes=gpu
NodeName=$NODE NodeHostname=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb Gres=gpu:$GPUS State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
# two more nodes on this machine for multi-node jobs (slurmds started by 'cluster.sh start-two-node')
$(for i in "${!MULTI_NODES[@]}"; do
        echo "NodeName=${MULTI_NODES[i]} NodeHostname=$NODE NodeAddr=127.0.0.1 Port=$((MULTI_PORT0 + i))" \
            "CPUs=$cpus RealMemory=$mem_mb Gres=gpu:$GPUS State=UNKNOWN"
    done)
PartitionName=$MULTI_PARTITION Nodes=$(IFS=,; echo "${MULTI_NODES[*]}") MaxTime=INFINITE State=UP
EOF
    write_owned "$GRES_CONF" 644 <<EOF
$MARK
NodeName=$NODE Name=gpu File=$STATE/dev/gpu[0-$((GPUS - 1))]
$(for n in "${MULTI_NODES[@]}"; do echo "NodeName=$n Name=gpu File=$STATE/dev/$n-gpu[0-$((GPUS - 1))]"; done)
EOF
    write_owned "$DBD_CONF" 600 <<EOF
$MARK
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
PidFile=$STATE/run/slurmdbd.own.pid
LogFile=$STATE/log/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
}

mysql_root() { mariadb --no-defaults --socket="$DB_SOCKET" -u root "$@"; }

cmd_install() {
    if have_packages; then
        say "Slurm, munge and MariaDB are installed"
        return 0
    fi
    [[ $(id -u) == 0 ]] || die "installing packages needs root"
    command -v apt-get >/dev/null || die "no apt-get: install ${PACKAGES[*]} by hand"
    say "installing ${PACKAGES[*]} (about 190 MB)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
    have_packages || die "packages installed but a binary is missing"
}

cmd_start() {
    [[ $(id -u) == 0 ]] || die "the test cluster runs as root"
    have_packages || die "Slurm is not installed (run: $0 install)"
    install -d -m 755 "$STATE" "$STATE/run" "$STATE/log" "$STATE/spool/slurmctld" "$STATE/spool/slurmd.$NODE"
    install -d -m 711 "$STATE/munge"
    install -d -m 755 "$STATE/dev"
    local g
    for ((g = 0; g < GPUS; g++)); do
        [[ -c $STATE/dev/gpu$g ]] || mknod -m 666 "$STATE/dev/gpu$g" c 1 3
        for n in "${MULTI_NODES[@]}"; do
            [[ -c $STATE/dev/$n-gpu$g ]] || mknod -m 666 "$STATE/dev/$n-gpu$g" c 1 3
        done
    done
    write_configs

    # munge: a key of our own, on a socket of our own
    if [[ ! -s $STATE/munge/munge.key ]]; then
        dd if=/dev/urandom of="$STATE/munge/munge.key" bs=1024 count=1 status=none
        chmod 600 "$STATE/munge/munge.key"
    fi
    launch munged "$(binary munged)" --foreground --force --socket="$MUNGE_SOCKET" \
        --key-file="$STATE/munge/munge.key" --pid-file="$STATE/run/munged.own.pid" \
        --log-file="$STATE/log/munged.log" --seed-file="$STATE/munge/munged.seed"
    wait_for 20 munge sh -c "munge --socket='$MUNGE_SOCKET' -n | unmunge --socket='$MUNGE_SOCKET'" \
        || die "munged is not answering on $MUNGE_SOCKET"

    # MariaDB for slurmdbd (sacct), on 127.0.0.1:$DB_PORT
    local fresh_db=0
    if [[ ! -d $STATE/mysql/mysql ]]; then
        fresh_db=1
        mariadb-install-db --no-defaults --datadir="$STATE/mysql" --user=root \
            --auth-root-authentication-method=socket --skip-test-db >"$STATE/log/mariadb-install.out" 2>&1 \
            || { tail -20 "$STATE/log/mariadb-install.out" >&2; die "mariadb-install-db failed"; }
    fi
    launch mariadbd "$(binary mariadbd)" --no-defaults --user=root --datadir="$STATE/mysql" \
        --socket="$DB_SOCKET" --port=$DB_PORT --bind-address=127.0.0.1 --skip-name-resolve \
        --pid-file="$STATE/run/mariadbd.own.pid" --log-error="$STATE/log/mariadbd.log" \
        --innodb-buffer-pool-size=128M --innodb-log-file-size=64M --innodb-lock-wait-timeout=900 \
        --max-connections=50 --performance-schema=OFF
    wait_for 60 mariadb mysql_root -e "SELECT 1" || die "mariadbd is not answering (log: $STATE/log/mariadbd.log)"
    if ((fresh_db)); then
        mysql_root -e "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
                       GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;"
    fi

    launch slurmdbd "$(binary slurmdbd)" -D
    wait_for 60 slurmdbd sacctmgr -n list cluster || die "slurmdbd is not answering (log: $STATE/log/slurmdbd.log)"
    if [[ -z $(sacctmgr -n -P list cluster "$CLUSTER" format=cluster 2>/dev/null) ]]; then
        sacctmgr -i add cluster "$CLUSTER" >/dev/null
        sacctmgr -i add account "$ACCOUNT" cluster="$CLUSTER" description="resnet-repro tests" >/dev/null
        sacctmgr -i add user root account="$ACCOUNT" cluster="$CLUSTER" defaultaccount="$ACCOUNT" >/dev/null
    fi

    launch slurmctld "$(binary slurmctld)" -D
    wait_for 60 slurmctld scontrol ping || die "slurmctld is not answering (log: $STATE/log/slurmctld.log)"
    launch slurmd "$(binary slurmd)" -D -N "$NODE"
    node_up() { [[ $(sinfo -h -n "$NODE" -o %t 2>/dev/null) =~ ^(idle|mix|alloc) ]]; }
    if ! wait_for 60 "node up" node_up; then
        scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true
        wait_for 30 "node idle" node_up || die "node $NODE is not up: $(sinfo -h -N -o '%N %t %E' 2>&1)"
    fi
    say "up: cluster $CLUSTER, partition $PARTITION, account $ACCOUNT, node $NODE ($(nproc) CPUs); state in $STATE"
}

stop_daemon() {  # stop_daemon NAME: SIGTERM (SIGKILL after 30 s) to the pid recorded for it
    local name=$1 pid
    if running_pid "$name"; then
        pid=$(<"$(pidfile "$name")")
        kill -TERM "$pid" 2>/dev/null || true
        if ! wait_for 30 "$name to exit" sh -c "! kill -0 $pid"; then
            say "$name (pid $pid) ignored SIGTERM; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        say "stopped $name (pid $pid)"
    fi
    rm -f "$(pidfile "$name")"
}

cmd_start_two_node() {
    running_pid slurmctld || die "the cluster is not running (run: $0 start)"
    local n i
    for n in "${MULTI_NODES[@]}"; do
        scontrol show node "$n" >/dev/null 2>&1 \
            || die "slurmctld does not know node $n (started by an older cluster.sh?): run $0 stop, then $0 start"
    done
    for i in "${!MULTI_NODES[@]}"; do
        n=${MULTI_NODES[i]}
        install -d -m 755 "$STATE/spool/slurmd.$n"
        launch "slurmd-$n" "$(binary slurmd)" -D -N "$n"
    done
    multi_up() {
        local n
        for n in "${MULTI_NODES[@]}"; do
            [[ $(sinfo -h -n "$n" -o %t 2>/dev/null) =~ ^(idle|mix|alloc)$ ]] || return 1
        done
    }
    if ! wait_for 60 "nodes ${MULTI_NODES[*]} up" multi_up; then
        scontrol update nodename="$(IFS=,; echo "${MULTI_NODES[*]}")" state=resume >/dev/null 2>&1 || true
        wait_for 30 "nodes ${MULTI_NODES[*]} idle" multi_up \
            || die "nodes ${MULTI_NODES[*]} are not up: $(sinfo -h -N -p "$MULTI_PARTITION" -o '%N %t %E' 2>&1)"
    fi
    say "up: partition $MULTI_PARTITION, nodes ${MULTI_NODES[*]} (one slurmd each, on this machine)"
}

cmd_stop_two_node() {
    local n jobs
    if running_pid slurmctld; then
        jobs=$(squeue -h -p "$MULTI_PARTITION" -o %A 2>/dev/null | tr '\n' ' ' || true)
        if [[ -n ${jobs// /} ]]; then
            say "cancelling jobs $jobs (partition $MULTI_PARTITION)"
            # shellcheck disable=SC2086
            scancel $jobs 2>/dev/null || true
            # shellcheck disable=SC2016  # $(...) is for the inner sh
            wait_for 30 "jobs gone" sh -c '[ -z "$(squeue -h -p '"$MULTI_PARTITION"' -o %A 2>/dev/null)" ]' \
                || say "jobs still listed: $(squeue -h -p "$MULTI_PARTITION" 2>&1)"
        fi
    fi
    for n in "${MULTI_NODES[@]}"; do
        stop_daemon "slurmd-$n"
    done
    # at once, not after SlurmdTimeout: nothing is scheduled on them (start-two-node brings them back)
    if running_pid slurmctld; then
        scontrol update nodename="$(IFS=,; echo "${MULTI_NODES[*]}")" state=down reason="cluster.sh stop-two-node" \
            >/dev/null 2>&1 || true
    fi
}

cmd_stop() {
    local name i
    # this cluster's jobs first, so that no job step outlives slurmd
    if running_pid slurmctld; then
        local jobs
        jobs=$(squeue -h -o %A 2>/dev/null | tr '\n' ' ' || true)
        if [[ -n ${jobs// /} ]]; then
            say "cancelling jobs $jobs"
            # shellcheck disable=SC2086
            scancel $jobs 2>/dev/null || true
            # shellcheck disable=SC2016  # $(...) is for the inner sh
            wait_for 30 "jobs gone" sh -c '[ -z "$(squeue -h -o %A 2>/dev/null)" ]' || say "jobs still listed: $(squeue -h 2>&1)"
        fi
    fi
    for name in "${MULTI_NODES[@]}"; do
        stop_daemon "slurmd-$name"
    done
    for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do
        stop_daemon "${DAEMONS[i]}"
    done
    remove_owned "$CONF"
    remove_owned "$DBD_CONF"
    remove_owned "$GRES_CONF"
}

cmd_status() {
    local name all=0
    for name in "${DAEMONS[@]}"; do
        if running_pid "$name"; then
            echo "$name: running (pid $(<"$(pidfile "$name")"))"
        else
            echo "$name: stopped"
            all=1
        fi
    done
    if ((all == 0)); then
        sinfo -N -o "%N %P %t %c %m" 2>&1 || all=1
    fi
    return $all
}

cmd_clean() {
    cmd_stop
    case $STATE in
        /tmp/* | /var/tmp/*) rm -rf "$STATE" ;;
        *) say "not deleting $STATE (outside /tmp)" ;;
    esac
}

case ${1:-} in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    clean) cmd_clean ;;
    start-two-node) cmd_start_two_node ;;
    stop-two-node) cmd_stop_two_node ;;
    *) echo "usage: $0 install|start|stop|status|clean|start-two-node|stop-two-node" >&2; exit 2 ;;
esac
