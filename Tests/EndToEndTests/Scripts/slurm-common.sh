# Sourced by slurm-one-node.sh and slurm-two-nodes.sh: a private Slurm cluster (munged, slurmctld, slurmd) that lives
# in a temporary folder and is stopped, by pid, when the script exits. Needs root, slurm-wlm and munge.
#
# Private on purpose, so a stray Slurm on the machine can neither reach it nor be reached: its own munge key and
# socket, its own SLURM_CONF, ports no default installation uses, a state folder of its own. Only one such cluster
# exists at a time (a lock), since every one of them would use both cores of the machine.

# Ports no Slurm installation uses by default (6817/6818), and distinct per script.
: "${SLURM_TEST_CTLD_PORT:?}" "${SLURM_TEST_SLURMD_PORT:?}"

work=""
daemon_pids=()
namespaces=()

slurm_log() { printf 'slurm-test: %s\n' "$*" >&2; }

# Stops whatever this script started, in reverse order, by pid: jobs first (so no slurmstepd outlives its slurmd),
# then slurmd and slurmctld, then munged; deletes its namespaces and its folder.
slurm_cleanup() {
    local status=$?
    set +e
    if [ -n "$work" ] && [ -S "$work/munge/munge.socket" ] && [ -f "$work/etc/slurm.conf" ]; then
        local jobs
        jobs="$(slurm_client squeue -h -o %i 2>/dev/null)"
        if [ -n "$jobs" ]; then
            slurm_client scancel $jobs 2>/dev/null
            for _ in $(seq 1 100); do
                [ -z "$(slurm_client squeue -h -o %i 2>/dev/null)" ] && break
                sleep 0.1
            done
        fi
    fi
    local i pid
    for ((i = ${#daemon_pids[@]} - 1; i >= 0; i--)); do
        pid="${daemon_pids[$i]}"
        kill -TERM "$pid" 2>/dev/null || continue
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null
    done
    for ns in ${namespaces[@]+"${namespaces[@]}"}; do ip netns del "$ns" 2>/dev/null || true; done
    if [ $status -ne 0 ] && [ -n "$work" ]; then
        for log in "$work"/*.log "$work"/munge/*.log; do
            [ -f "$log" ] && { echo "--- $log (last lines)" >&2; tail -n 15 "$log" >&2; }
        done
    fi
    [ -n "$work" ] && rm -rf "$work"
    exit $status
}

# The lock, the folder and the exit trap. The folder must be traversable by the munge user.
slurm_begin() {
    exec 9>/tmp/tandem-slurm-test.lock
    flock -w 600 9 || { slurm_log "another Slurm test cluster has held the lock for 10 minutes"; exit 1; }
    work="$(mktemp -d /tmp/tandem-slurm-XXXXXX)"
    chmod 755 "$work"
    mkdir -p "$work/etc" "$work/state" "$work/munge"
    trap slurm_cleanup EXIT
    trap 'exit 143' TERM INT
}

# munged as the munge user with a fresh key, on a socket of its own (slurm.conf's AuthInfo points every daemon and
# client at it). Optional: a command prefix, to start it in a namespace.
start_munge() {
    head -c 1024 /dev/urandom >"$work/munge/munge.key"
    chown -R munge:munge "$work/munge"
    chmod 755 "$work/munge"  # munged wants its socket's folder searchable by all
    chmod 400 "$work/munge/munge.key"
    "$@" su -s /bin/sh munge -c "munged --socket=$work/munge/munge.socket --key-file=$work/munge/munge.key \
        --pid-file=$work/munge/munged.pid --log-file=$work/munge/munged.log --seed-file=$work/munge/munged.seed"
    wait_for "munged's pid file" 10 test -s "$work/munge/munged.pid"
    daemon_pids+=("$(cat "$work/munge/munged.pid")")
    munge -S "$work/munge/munge.socket" -n | unmunge -S "$work/munge/munge.socket" >/dev/null \
        || { slurm_log "munge does not round-trip a credential"; exit 1; }
}

# slurm.conf in $1 (a folder): the settings shared by both scripts, then the node and partition lines from stdin.
# Measured on this machine (see ../shared/KNOWHOW.md): linuxproc process tracking and no task plugin, since the test
# runs without a cgroup hierarchy Slurm could own; root as Slurm's user; state and logs in the private folder.
write_slurm_conf() {
    local dir="$1"
    mkdir -p "$dir"
    {
        cat <<CONF
ClusterName=tandemtest
SlurmctldPort=$SLURM_TEST_CTLD_PORT
SlurmdPort=$SLURM_TEST_SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$work/munge/munge.socket
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
KillWait=2
InactiveLimit=0
MailProg=/bin/true
PlugStackConfig=$dir/plugstack.conf
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool-%n
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd-%n.pid
SlurmctldLogFile=$work/slurmctld.log
SlurmdLogFile=$work/slurmd-%n.log
CONF
        cat
    } >"$dir/slurm.conf"
    : >"$dir/plugstack.conf"
}

# A Slurm client command against this cluster.
slurm_client() { SLURM_CONF="$work/etc/slurm.conf" "$@"; }

# wait_for WHAT SECONDS COMMAND...: polls COMMAND until it succeeds; fails the script naming WHAT after SECONDS.
wait_for() {
    local what="$1" seconds="$2"; shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || { slurm_log "timed out after ${seconds} s waiting for $what"; exit 1; }
        sleep 0.2
    done
}

# Records the pid a daemon wrote to its pid file.
record_pid_file() {
    wait_for "$1" 15 test -s "$1"
    daemon_pids+=("$(cat "$1")")
}

# Every node listed idle: a node that came up drained (it was seen down before) is resumed once.
wait_for_idle_nodes() {
    local count="$1" prefix=("${@:2}")
    local deadline=$((SECONDS + 60)) resumed=0 states
    while :; do
        states="$("${prefix[@]+"${prefix[@]}"}" env SLURM_CONF="$work/etc/slurm.conf" sinfo -h -N -o '%N %t' 2>/dev/null || true)"
        [ "$(grep -c ' idle$' <<<"$states")" -eq "$count" ] && return
        if [ $resumed = 0 ] && grep -Eq ' (drain|down|drng|inval)[*~#]?$' <<<"$states"; then
            local node
            for node in $(awk '{print $1}' <<<"$states"); do
                "${prefix[@]+"${prefix[@]}"}" env SLURM_CONF="$work/etc/slurm.conf" scontrol update nodename="$node" state=resume 2>/dev/null || true
            done
            resumed=1
        fi
        [ $SECONDS -lt $deadline ] || { slurm_log "nodes not idle after 60 s: $(tr '\n' ';' <<<"$states")"; exit 1; }
        sleep 0.3
    done
}
