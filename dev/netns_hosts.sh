# Two network "hosts" on this machine, for running MPI over TCP without a second
# machine (sourced by dev/test/test_mpi.sh and dev/bench_allreduce.sh). Needs root and
# iproute2. netns_hosts_up DIR makes two network namespaces joined by a veth pair
# (10.89.0.1 and 10.89.0.2), and in DIR a host file and the script that mpirun uses
# instead of ssh to start its daemon on the other "host" (Open MPI's plm_rsh_agent):
# it runs the command inside that host's namespace. Then
#     $NETNS_MPIRUN -np 2 PROGRAM ...
# starts one rank in each namespace, talking TCP over the veth pair.
# netns_hosts_down removes the namespaces and with them the pair.

NETNS_A=ffhost_a$$
NETNS_B=ffhost_b$$

netns_hosts_up() { # DIR
    ip netns add "$NETNS_A" && ip netns add "$NETNS_B" || return 1
    ip link add "v$NETNS_A" type veth peer name "v$NETNS_B" || return 1
    ip link set "v$NETNS_A" netns "$NETNS_A" && ip link set "v$NETNS_B" netns "$NETNS_B" || return 1
    ip -n "$NETNS_A" addr add 10.89.0.1/24 dev "v$NETNS_A" || return 1
    ip -n "$NETNS_B" addr add 10.89.0.2/24 dev "v$NETNS_B" || return 1
    for ns in "$NETNS_A" "$NETNS_B"; do
        ip -n "$ns" link set lo up && ip -n "$ns" link set "v$ns" up || return 1
    done
    cat > "$1/netns_agent.sh" <<AGENT
#!/bin/sh
host=\$1
shift
case \$host in
    10.89.0.1) exec ip netns exec $NETNS_A sh -c "\$*" ;;
    10.89.0.2) exec ip netns exec $NETNS_B sh -c "\$*" ;;
esac
echo "netns agent: unknown host \$host" >&2
exit 1
AGENT
    chmod +x "$1/netns_agent.sh"
    printf '10.89.0.1 slots=1\n10.89.0.2 slots=1\n' > "$1/netns_hosts"
    # mpirun itself runs on the first host; only TCP between the ranks (no shared memory)
    NETNS_MPIRUN="ip netns exec $NETNS_A timeout 300 mpirun --hostfile $1/netns_hosts
        --mca plm_rsh_agent $1/netns_agent.sh --mca btl tcp,self --mca btl_tcp_if_include 10.89.0.0/24
        --mca oob_tcp_if_include 10.89.0.0/24 -x OMP_NUM_THREADS"
}

netns_hosts_down() {
    ip netns del "$NETNS_A" 2>/dev/null
    ip netns del "$NETNS_B" 2>/dev/null
    return 0
}
