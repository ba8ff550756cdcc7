#!/usr/bin/env bash
# The all-reduce figures of the README: build/mpi/bench_allreduce (the paper's
# WikiText-103 model's gradients, 624 MB) on 2 ranks over shared memory, then over
# TCP between two network namespaces joined by a veth pair (root only). `make
# bench-allreduce` builds and runs it; each rank takes about 2.5 GB of memory.
cd "$(dirname "$0")/.."
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
tmp=$(mktemp -d)
source dev/netns_hosts.sh
trap 'netns_hosts_down; rm -rf "$tmp"' EXIT

echo "== shared memory (Open MPI's vader), 2 ranks on this machine"
timeout 600 mpirun --oversubscribe --bind-to none -np 2 build/mpi/bench_allreduce
echo "== TCP over a veth pair between two network namespaces, one rank in each"
if ! netns_hosts_up "$tmp" > "$tmp/netns.out" 2>&1; then
    echo "skip: cannot create network namespaces (root and iproute2 needed): $(tail -1 "$tmp/netns.out")"
    exit 0
fi
$NETNS_MPIRUN -np 2 "$PWD/build/mpi/bench_allreduce"
