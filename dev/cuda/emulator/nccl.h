// The NCCL calls of cuda/dist.cuh on the CPU (see cuda_runtime.h beside it), over MPI:
// device memory is host memory here, so an all-reduce is MPI's.
#ifndef EMULATOR_NCCL_H
#define EMULATOR_NCCL_H

#include <mpi.h>
#include "cuda_runtime.h"

typedef enum { ncclSuccess = 0, ncclSystemError = 2 } ncclResult_t;
typedef enum { ncclFloat = 7 } ncclDataType_t;
typedef enum { ncclSum = 0 } ncclRedOp_t;
typedef struct { char internal[128]; } ncclUniqueId;
typedef struct { int rank, size; } * ncclComm_t;

static const char* ncclGetErrorString(ncclResult_t r) { return r == ncclSuccess ? "no error" : "system error"; }
static ncclResult_t ncclGetUniqueId(ncclUniqueId* id) { memset(id, 7, sizeof *id); return ncclSuccess; }
static ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId id, int rank) {
    *comm = (ncclComm_t)malloc(sizeof **comm);
    (*comm)->rank = rank;
    (*comm)->size = nranks;
    return ncclSuccess;
}
static ncclResult_t ncclAllReduce(const void* send, void* recv, size_t count, ncclDataType_t type, ncclRedOp_t op,
                                  ncclComm_t comm, cudaStream_t stream) {
    if (type != ncclFloat || op != ncclSum || count > (size_t)1 << 30) return ncclSystemError;
    int rc = MPI_Allreduce(send == recv ? MPI_IN_PLACE : send, recv, (int)count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    return rc == MPI_SUCCESS ? ncclSuccess : ncclSystemError;
}
static ncclResult_t ncclCommDestroy(ncclComm_t comm) { free(comm); return ncclSuccess; }

#endif
