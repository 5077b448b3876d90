#!/usr/bin/env bash
# A real one-node Slurm cluster on this machine — munged, slurmctld and slurmd, the node line from `slurmd -C` —
# around one command, which runs with SLURM_CONF pointing at it (so salloc, srun, sbatch reach it). Every daemon is
# stopped by its pid when the command ends, whatever happened. Needs root, slurm-wlm and munge.
# Usage: slurm-one-node.sh COMMAND [ARGS...]
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: slurm-one-node.sh COMMAND [ARGS...]" >&2; exit 2; }
SLURM_TEST_CTLD_PORT=17817 SLURM_TEST_SLURMD_PORT=17818
source "$(dirname "$0")/slurm-common.sh"

slurm_begin
start_munge
node="$(hostname)"
# The node exactly as slurmd sees the hardware (a line claiming more CPUs than there are leaves the node "inval").
node_line="$(slurmd -C | grep '^NodeName=')"
write_slurm_conf "$work/etc" <<CONF
SlurmctldHost=$node
$node_line
PartitionName=debug Nodes=$node Default=YES State=UP OverSubscribe=FORCE MaxTime=30
CONF
export SLURM_CONF="$work/etc/slurm.conf"
slurmctld
record_pid_file "$work/slurmctld.pid"
slurmd
record_pid_file "$work/slurmd-$node.pid"
wait_for_idle_nodes 1
slurm_log "one-node cluster up: node $node idle ($(sed -n 's/.*\(CPUs=[0-9]*\).*/\1/p' <<<"$node_line"))"
"$@"
