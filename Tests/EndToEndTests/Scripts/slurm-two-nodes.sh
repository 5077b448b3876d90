#!/usr/bin/env bash
# A real two-node Slurm cluster on this machine: two network namespaces joined by a veth pair (10.79.1.1 and
# 10.79.1.2, apart from two-hosts.sh's 10.77.x), one slurmd in each (nodes "nodea" and "nodeb"), munged
# and slurmctld in the first. COMMAND runs in the first namespace with SLURM_CONF set, so a job it starts really
# spans two hosts. The node names resolve through a private /etc/hosts, bound over the real one in a mount namespace
# of this script's own (the machine's file is never touched). Every daemon is stopped by its pid and both namespaces
# are deleted when the command ends. Needs root, iproute2, util-linux (unshare, nsenter), slurm-wlm and munge.
# Usage: slurm-two-nodes.sh COMMAND [ARGS...]
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: slurm-two-nodes.sh COMMAND [ARGS...]" >&2; exit 2; }
if [ -z "${TANDEM_SLURM_MOUNT_NAMESPACE:-}" ]; then
    exec unshare --mount --propagation private env TANDEM_SLURM_MOUNT_NAMESPACE=1 "$0" "$@"
fi
SLURM_TEST_CTLD_PORT=17827 SLURM_TEST_SLURMD_PORT=17828
source "$(dirname "$0")/slurm-common.sh"

slurm_begin
suffix="$$"
a="tandem-slurm-a-$suffix" b="tandem-slurm-b-$suffix" prefix="10.79.1"
source "$(dirname "$0")/namespaces.sh"
# Listed for the cleanup before they exist: deleting a namespace that was never made is harmless there.
namespaces+=("$a" "$b")
join_two_namespaces "$a" "$b" "$prefix" "s$suffix"

# The machine's name resolves to the controller's address (slurmctld must run on a host named in SlurmctldHost).
{ grep -v "[[:space:]]$(hostname)\([[:space:]]\|$\)" /etc/hosts; printf '%s.1 %s nodea\n%s.2 nodeb\n' "$prefix" "$(hostname)" "$prefix"; } >"$work/hosts"
mount --bind "$work/hosts" /etc/hosts

# nsenter, not `ip netns exec`: the latter remounts /sys, and slurmd then finds no cgroup file system.
in_a=(nsenter --net=/run/netns/"$a") in_b=(nsenter --net=/run/netns/"$b")
start_munge "${in_a[@]}"
# Each node as slurmd sees the machine's hardware (both see all of it): 2 tasks per node fit without overcommit.
hardware="$(slurmd -C | sed -n 's/^NodeName=[^ ]* //p')"
write_slurm_conf "$work/etc" <<CONF
SlurmctldHost=$(hostname)($prefix.1)
NodeName=nodea NodeAddr=$prefix.1 $hardware
NodeName=nodeb NodeAddr=$prefix.2 $hardware
PartitionName=debug Nodes=nodea,nodeb Default=YES State=UP OverSubscribe=FORCE MaxTime=30
CONF
# Both "nodes" share /tmp: each slurmd reads a copy of the configuration whose mpi.conf gives PMIx a folder of its own
# (PMIxCliTmpDirBase does not expand %n).
for node in nodea nodeb; do
    mkdir -p "$work/etc-$node" "$work/pmix-$node"
    cp "$work/etc/slurm.conf" "$work/etc/plugstack.conf" "$work/etc-$node/"
    echo "PMIxCliTmpDirBase=$work/pmix-$node" >"$work/etc-$node/mpi.conf"
done
export SLURM_CONF="$work/etc/slurm.conf"
"${in_a[@]}" slurmctld
record_pid_file "$work/slurmctld.pid"
"${in_a[@]}" slurmd -N nodea -f "$work/etc-nodea/slurm.conf"
record_pid_file "$work/slurmd-nodea.pid"
"${in_b[@]}" slurmd -N nodeb -f "$work/etc-nodeb/slurm.conf"
record_pid_file "$work/slurmd-nodeb.pid"
wait_for_idle_nodes 2 "${in_a[@]}"
slurm_log "two-node cluster up: nodea ($prefix.1, namespace $a) and nodeb ($prefix.2, namespace $b) idle"
# MPI between the nodes goes over the veth; yielding while idle keeps the busy-polling ranks from starving it.
"${in_a[@]}" env OMPI_MCA_btl=self,tcp OMPI_MCA_btl_tcp_if_include="$prefix.0/24" OMPI_MCA_oob_tcp_if_include="$prefix.0/24" \
    OMPI_MCA_mpi_yield_when_idle=1 "$@"
