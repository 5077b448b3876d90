#!/usr/bin/env bash
# Runs a 2-task mirrored cluster job across two "hosts": network namespaces joined by a veth pair, each with its own
# address. mpirun starts in the first; OpenMPI's remote-shell agent is a small script that enters the other namespace
# instead of ssh. Needs root and iproute2. Usage: two-hosts.sh TANDEM_BINARY [tandem train flags]
set -euo pipefail
binary="$1"; shift
root="$(cd "$(dirname "$0")/../../.." && pwd)"
suffix="$$"
a="tandem-a-$suffix" b="tandem-b-$suffix" net="10.77.$((suffix % 200)).0/24"
prefix="${net%.0/24}"
work="$(mktemp -d)"

cleanup() {
    ip netns del "$a" 2>/dev/null || true
    ip netns del "$b" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

source "$(dirname "$0")/namespaces.sh"
join_two_namespaces "$a" "$b" "$prefix" "v$suffix"

# OpenMPI calls the agent as: AGENT [options] HOST COMMAND...
cat >"$work/agent" <<AGENT
#!/bin/sh
while [ "\${1#-}" != "\$1" ]; do shift; done
host="\$1"; shift
echo "\$host" >>"$work/agent.log"
case "\$host" in
    $prefix.1) ns=$a ;;
    $prefix.2) ns=$b ;;
    *) echo "agent: unknown host \$host" >&2; exit 1 ;;
esac
exec ip netns exec "\$ns" /bin/sh -c "\$*"
AGENT
chmod +x "$work/agent"

sed -e "s/\"localhost:2222\"/\"$prefix.1:2222\"/" -e "s/\"localhost:2223\"/\"$prefix.2:2223\"/" \
    "$root/configs/cluster-mirrored.json" >"$work/cluster.json"
# Data paths in the config are absolute, so the copy trains on the same files.

cd "$root"
ip netns exec "$a" env \
    OMPI_MCA_plm_rsh_agent="$work/agent" \
    OMPI_MCA_btl=self,tcp OMPI_MCA_btl_tcp_if_include="$net" OMPI_MCA_oob_tcp_if_include="$net" \
    OMPI_MCA_mpi_yield_when_idle=1 \
    TANDEM_PREBUILT="$binary" TANDEM_RUNS="$work/runs" ./launch.sh "$work/cluster.json" "$@"
# The worker must have been started through the agent, in the other namespace.
grep -qx "$prefix.2" "$work/agent.log" || { echo "two-hosts.sh: the worker was not started on $prefix.2" >&2; exit 1; }
echo "two-hosts.sh: chief on $prefix.1 ($a), worker on $prefix.2 ($b)"
