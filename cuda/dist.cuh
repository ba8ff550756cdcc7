// Several GPUs under MPI (`make USE_MPI=1 USE_CUDA=1`, then `mpirun -np N
// ./train_gpt_flow_cuda`): every rank drives the GPU of its rank on its host, and the
// gradients are summed across the ranks on the GPUs by one NCCL all-reduce per update,
// whose communicator's id rank 0 hands out through MPI (utils/dist.h). Everything else
// distributed (the parts of a batch, sums of metrics, the start-up checks, rank 0's
// checkpoint handed to the others) is utils/dist.h's, as on the CPU. Built without
// USE_MPI there is one GPU, and these calls are no-ops.
#ifndef CUDA_DIST_CUH
#define CUDA_DIST_CUH

#include <stddef.h>
#include "utils/dist.h"
#include "cuda/common.cuh"

#ifdef USE_MPI
#include <nccl.h>

#define NCCL_CHECK(call) nccl_check((call), #call, __FILE__, __LINE__)
static void nccl_check(ncclResult_t r, const char* call, const char* file, int line) {
    if (r != ncclSuccess) fail("%s:%d: %s: %s", file, line, call, ncclGetErrorString(r));
}

typedef struct {
    ncclComm_t comm;
} GpuDist;

// This rank's GPU: its rank among the ranks on its host.
static int gpu_dist_device(const Dist* d) {
    MPI_Comm host;
    int local_rank;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, d->rank, MPI_INFO_NULL, &host);
    MPI_Comm_rank(host, &local_rank);
    MPI_Comm_free(&host);
    return local_rank;
}

// Call once the rank's GPU is selected (cuda_setup).
static GpuDist gpu_dist_init(const Dist* d) {
    GpuDist g = {NULL};
    if (d->size == 1) return g;
    ncclUniqueId id;
    if (d->rank == 0) NCCL_CHECK(ncclGetUniqueId(&id));
    dist_broadcast(d, &id, sizeof id);
    NCCL_CHECK(ncclCommInitRank(&g.comm, d->size, id, d->rank));
    return g;
}

// x (n floats of device memory) = the sum of every rank's x.
static void gpu_dist_sum(const GpuDist* g, float* x, size_t n) {
    if (g->comm == NULL) return;
    NCCL_CHECK(ncclAllReduce(x, x, n, ncclFloat, ncclSum, g->comm, 0));
}

static void gpu_dist_free(GpuDist* g) {
    if (g->comm != NULL) NCCL_CHECK(ncclCommDestroy(g->comm));
    g->comm = NULL;
}

#else

typedef struct {
    int unused;
} GpuDist;

static int gpu_dist_device(const Dist* d) { return 0; }
static GpuDist gpu_dist_init(const Dist* d) { GpuDist g = {0}; return g; }
static void gpu_dist_sum(const GpuDist* g, float* x, size_t n) {}
static void gpu_dist_free(GpuDist* g) {}

#endif

#endif
