# Sourced by the two-host scripts: two network namespaces joined by a veth pair, the first at PREFIX.1/24 and the
# second at PREFIX.2/24, loopback and the pair up.
#   join_two_namespaces NAMESPACE_A NAMESPACE_B PREFIX VETH_NAME_STEM
# The pair's ends are named STEMa and STEMb (at most 15 characters with the suffix the caller puts in the stem).
join_two_namespaces() {
    local a="$1" b="$2" prefix="$3" stem="$4"
    ip netns add "$a"
    ip netns add "$b"
    ip link add "${stem}a" type veth peer name "${stem}b"
    ip link set "${stem}a" netns "$a"
    ip link set "${stem}b" netns "$b"
    ip -n "$a" addr add "$prefix.1/24" dev "${stem}a"
    ip -n "$b" addr add "$prefix.2/24" dev "${stem}b"
    local namespace
    for namespace in "$a" "$b"; do ip -n "$namespace" link set lo up; done
    ip -n "$a" link set "${stem}a" up
    ip -n "$b" link set "${stem}b" up
}
