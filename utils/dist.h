// Training on several processes with MPI (`make USE_MPI=1`, then `mpirun -np N ./train_...`):
// who this process is, which part of a batch it takes, sums of metrics across the
// processes ("ranks"), checks that every rank was launched alike, and the reduction
// of the gradients. Built without USE_MPI there is one rank and every call is a
// no-op or an identity, so the trainers read the same either way.
//
// How a run is divided, so that it does not depend on the number of ranks:
//  - batch_size is the global micro-batch: rank r computes samples [B r/N, B (r+1)/N)
//    of each (dist_part). Every rank draws the random choices of the whole batch
//    and keeps its own, and per-sample randomness (dropout) is keyed by the
//    sample's index in the global batch, so N ranks see exactly what one rank does,
//    and a checkpoint (which stores the global data position) resumes on any N.
//  - each rank's backward pass adds d(sum of its losses) / (global count) into its
//    gradients; their sum over the ranks is the gradient of the whole batch.
//  - DistParams sums the gradients across the ranks in buckets: a bucket's
//    non-blocking all-reduce starts as soon as the backward pass is done with its
//    tensors, while the pass goes on with earlier layers.
//  - with ZeRO-1 (zero = 1) each rank keeps AdamW's moments for 1/N of the
//    parameters: the buckets are reduce-scattered instead, each rank updates its
//    part, and the parameters are all-gathered.
#ifndef UTILS_DIST_H
#define UTILS_DIST_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <omp.h>
#include "utils/real.h"
#include "utils/utils.h"
#include "utils/rng.h"
#include "utils/params.h"

#ifdef USE_MPI
#include <mpi.h>
#define DIST_REAL (sizeof(real) == sizeof(double) ? MPI_DOUBLE : MPI_FLOAT)
typedef MPI_Request DistRequest;
#else
typedef int DistRequest;
#endif

typedef struct {
    int rank, size;  // this process and how many there are (0 and 1 without MPI)
    int local_size;  // ranks on this host
} Dist;

// One process alone: what dist_init gives without MPI.
static Dist dist_single(void) {
    Dist d = {0, 1, 1};
    return d;
}

// The part [lo, hi) of n items that this rank takes: n r/N to n (r+1)/N.
static void dist_part(const Dist* d, long n, long* lo, long* hi) {
    *lo = n * d->rank / d->size;
    *hi = n * (d->rank + 1) / d->size;
}

// Fails unless a micro-batch of B samples splits evenly among the ranks.
static void dist_check_batch(const Dist* d, long B) {
    if (B % d->size != 0)
        fail("batch_size %ld does not divide by the %d ranks: every rank takes batch_size / ranks samples of each "
             "micro-batch; choose a batch_size that is a multiple of %d", B, d->size, d->size);
}

// A 64-bit hash of n bytes, continuing h: to compare settings and data across ranks.
static uint64_t dist_hash(uint64_t h, const void* data, size_t n) {
    const unsigned char* p = (const unsigned char*)data;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        h = rng_hash64(h ^ w) + 0x9e3779b97f4a7c15ULL;
    }
    uint64_t tail = n;
    for (; i < n; i++) tail = tail << 8 | p[i];
    return rng_hash64(h ^ tail);
}

// ----------------------------------------------------------------------------
// The calls into MPI, and what they are with one process.

#ifdef USE_MPI

// Starts MPI and sets the OpenMP threads: unless OMP_NUM_THREADS says otherwise, the
// cores this rank may run on (mpirun may bind it to one), at most the host's cores
// shared among its ranks. Only rank 0 prints: the others' stdout goes nowhere,
// their errors still reach stderr.
static Dist dist_init(int* argc, char*** argv) {
    MPI_Init(argc, argv);
    Dist d;
    MPI_Comm_rank(MPI_COMM_WORLD, &d.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &d.size);
    MPI_Comm host;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, d.rank, MPI_INFO_NULL, &host);
    MPI_Comm_size(host, &d.local_size);
    MPI_Comm_free(&host);
    if (getenv("OMP_NUM_THREADS") == NULL) {
        int share = (int)sysconf(_SC_NPROCESSORS_ONLN) / d.local_size;
        int threads = omp_get_num_procs() < share ? omp_get_num_procs() : share;
        omp_set_num_threads(threads > 1 ? threads : 1);
    }
    if (d.rank == 0 && d.size > 1)
        printf("mpi: %d ranks, %d on this host, %d threads on rank 0\n", d.size, d.local_size, omp_get_max_threads());
    if (d.rank != 0 && freopen("/dev/null", "w", stdout) == NULL) fail("rank %d: cannot silence stdout", d.rank);
    return d;
}

static void dist_finalize(void) { MPI_Finalize(); }

// Every rank's buf gets rank 0's (in pieces: MPI counts are ints).
static void dist_broadcast(const Dist* d, void* buf, size_t bytes) {
    for (size_t done = 0; d->size > 1 && done < bytes; done += 1 << 30) {
        size_t n = bytes - done < (size_t)1 << 30 ? bytes - done : (size_t)1 << 30;
        MPI_Bcast((char*)buf + done, (int)n, MPI_BYTE, 0, MPI_COMM_WORLD);
    }
}

// x[i] = the sum of x[i] over the ranks.
static void dist_sum_doubles(const Dist* d, double* x, int n) {
    if (d->size > 1) MPI_Allreduce(MPI_IN_PLACE, x, n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
}

static void dist_sum_longs(const Dist* d, long* x, int n) {
    if (d->size > 1) MPI_Allreduce(MPI_IN_PLACE, x, n, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
}

static void dist_allreduce_start(real* x, long n, DistRequest* req) {
    MPI_Iallreduce(MPI_IN_PLACE, x, (int)n, DIST_REAL, MPI_SUM, MPI_COMM_WORLD, req);
}

// Every rank's x (n) summed; rank r gets part r (counts[r] reals) in out.
static void dist_reduce_scatter_start(const real* x, real* out, const int* counts, DistRequest* req) {
    MPI_Ireduce_scatter(x, out, counts, DIST_REAL, MPI_SUM, MPI_COMM_WORLD, req);
}

// x holds every rank's part at displs[r] (this rank's own already in place); fills in the others.
static void dist_allgather_start(real* x, const int* counts, const int* displs, DistRequest* req) {
    MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, x, counts, displs, DIST_REAL, MPI_COMM_WORLD, req);
}

// Rank 0's out (at displs[r]) gets every rank's part.
static void dist_gather(const real* part, real* out, const int* counts, const int* displs, int rank) {
    MPI_Gatherv(part, counts[rank], DIST_REAL, out, counts, displs, DIST_REAL, 0, MPI_COMM_WORLD);
}

// Every rank's part gets its part (at displs[r]) of rank 0's x.
static void dist_scatter(const real* x, real* part, const int* counts, const int* displs, int rank) {
    MPI_Scatterv(x, counts, displs, DIST_REAL, part, counts[rank], DIST_REAL, 0, MPI_COMM_WORLD);
}

// Lets started operations advance: Open MPI moves non-blocking collectives only
// inside MPI calls, so the backward pass calls this between layers.
static void dist_progress(DistRequest* req) {
    int done;
    MPI_Test(req, &done, MPI_STATUS_IGNORE);
}

static void dist_wait(DistRequest* req) { MPI_Wait(req, MPI_STATUS_IGNORE); }

#else

static Dist dist_init(int* argc, char*** argv) { return dist_single(); }
static void dist_finalize(void) {}
static void dist_broadcast(const Dist* d, void* buf, size_t bytes) {}
static void dist_sum_doubles(const Dist* d, double* x, int n) {}
static void dist_sum_longs(const Dist* d, long* x, int n) {}
static void dist_allreduce_start(real* x, long n, DistRequest* req) {}
static void dist_reduce_scatter_start(const real* x, real* out, const int* counts, DistRequest* req) {}
static void dist_allgather_start(real* x, const int* counts, const int* displs, DistRequest* req) {}
static void dist_gather(const real* part, real* out, const int* counts, const int* displs, int rank) {}
static void dist_scatter(const real* x, real* part, const int* counts, const int* displs, int rank) {}
static void dist_progress(DistRequest* req) {}
static void dist_wait(DistRequest* req) {}

#endif

// ----------------------------------------------------------------------------
// Metrics and checks across ranks

// The sum of x over the ranks.
static double dist_sum(const Dist* d, double x) {
    dist_sum_doubles(d, &x, 1);
    return x;
}

// Whether every rank's value is rank 0's.
static int dist_same(const Dist* d, uint64_t value) {
    uint64_t first = value;
    dist_broadcast(d, &first, sizeof first);
    return dist_sum(d, value != first) == 0;
}

// Fails on every rank whose value (a hash of what it read) differs from rank
// 0's, naming `what`: ranks that read different data would train different
// models without noticing.
static void dist_check_same(const Dist* d, uint64_t value, const char* what) {
    uint64_t first = value;
    dist_broadcast(d, &first, sizeof first);
    if (value != first)
        fail("rank %d: the %s differ from rank 0's (hash %016llx, rank 0 %016llx); every rank must read the same "
             "files", d->rank, what, (unsigned long long)value, (unsigned long long)first);
}

// ----------------------------------------------------------------------------
// The part of the parameters one rank's optimizer step updates: pieces of the
// parameter memory, each within one tensor, whose gradients and AdamW moments lie
// in the shard's own arrays at `at`. Unsharded, the pieces are the tensors and the
// arrays the Parameters' own.

typedef struct {
    long offset, count; // reals of the parameter memory
    long at;            // where its gradients and moments are in the shard's arrays
    int decay;          // AdamW decays it
} ShardPiece;

typedef struct {
    ShardPiece* pieces;
    int npieces;
    real *grads, *m, *v;
    long count;         // reals of grads, m and v
    const Dist* split;  // ZeRO-1: the ranks hold different pieces (norms add up across them); else NULL
} ParamShard;

static void shard_add(ParamShard* s, long offset, long count, long at, int decay) {
    if (count == 0) return;
    s->pieces = (ShardPiece*)realloc(s->pieces, (size_t)(s->npieces + 1) * sizeof(ShardPiece));
    if (s->pieces == NULL) fail("out of memory describing the optimizer's shard");
    ShardPiece piece = {offset, count, at, decay};
    s->pieces[s->npieces++] = piece;
}

// Every tensor, in place.
static ParamShard param_shard_whole(const Parameters* P) {
    ParamShard s = {NULL, 0, P->grads, P->m, P->v, P->count, NULL};
    for (int i = 0; i < P->ntensors; i++)
        shard_add(&s, P->tensors[i].offset, P->tensors[i].size, P->tensors[i].offset, P->tensors[i].decay);
    return s;
}

// ----------------------------------------------------------------------------
// DistParams: the gradients' sum across the ranks, in buckets.
//
// The trainer declares which gradients form each bucket (dist_params_bucket), in
// as many slices of the parameter memory as it takes; each slice is one message.
// Its backward pass calls dist_params_ready(bucket) when a bucket's gradients are
// complete, which starts that bucket's messages; dist_params_reduce starts what is
// left and waits for all of them. With gradient accumulation only the last
// micro-batch's backward pass is handed the DistParams.
//
// ZeRO-1 (zero = 1, more than one rank): rank r owns part r of every message (its
// count split as dist_part does). The message is reduce-scattered into the
// shard's gradients; the optimizer updates the owned parts with the shard's
// moments (the Parameters' m and v are freed); dist_params_gather all-gathers
// the updated parts. Per rank that keeps 2N/ranks moments and N/ranks reduced
// gradients instead of 2N moments.

#define DIST_MESSAGE_MAX (1L << 28) // reals in one message: MPI counts are ints

typedef struct {
    long offset, count; // the slice of the parameter memory
    int bucket;
    int started;
    long at;            // ZeRO-1: where this rank's part is in the shard's arrays
    int *counts, *displs; // ZeRO-1: every rank's part of the slice
    DistRequest request;
} DistMessage;

typedef struct {
    const Dist* dist;
    Parameters* P;
    int zero;           // ZeRO-1 in effect (asked for, and more than one rank)
    DistMessage* msgs;
    int nmsgs;
    ParamShard shard;   // what this rank's optimizer step updates
} DistParams;

static DistParams dist_params_make(const Dist* d, Parameters* P, int zero) {
    DistParams dp;
    memset(&dp, 0, sizeof dp);
    dp.dist = d;
    dp.P = P;
    dp.zero = zero && d->size > 1;
    return dp;
}

// Adds count gradients from grad (a pointer into P->grads) to bucket `bucket`;
// a slice that continues the bucket's last one joins its message. count 0: nothing.
static void dist_params_bucket(DistParams* dp, int bucket, const real* grad, long count) {
    if (count == 0) return;
    long offset = grad - dp->P->grads;
    if (offset < 0 || offset + count > dp->P->count)
        fail("bucket %d: gradients [%ld, %ld) outside the parameters' %ld", bucket, offset, offset + count,
             dp->P->count);
    DistMessage* last = dp->nmsgs > 0 ? &dp->msgs[dp->nmsgs - 1] : NULL;
    if (last != NULL && last->bucket == bucket && last->offset + last->count == offset &&
        last->count + count <= DIST_MESSAGE_MAX) {
        last->count += count;
        return;
    }
    long piece = count < DIST_MESSAGE_MAX ? count : DIST_MESSAGE_MAX;
    dp->msgs = (DistMessage*)realloc(dp->msgs, (size_t)(dp->nmsgs + 1) * sizeof(DistMessage));
    if (dp->msgs == NULL) fail("out of memory describing the gradient buckets");
    DistMessage* msg = &dp->msgs[dp->nmsgs++];
    memset(msg, 0, sizeof *msg);
    msg->offset = offset;
    msg->count = piece;
    msg->bucket = bucket;
    if (piece < count) dist_params_bucket(dp, bucket, grad + piece, count - piece);
}

// The tensor that holds parameter `offset`.
static const TensorInfo* tensor_at(const Parameters* P, long offset) {
    for (int i = 0; i < P->ntensors; i++)
        if (offset >= P->tensors[i].offset && offset < P->tensors[i].offset + P->tensors[i].size) return &P->tensors[i];
    fail("no tensor holds parameter %ld of %ld", offset, P->count);
}

static int compare_message_offsets(const void* a, const void* b) {
    long x = (*(DistMessage* const*)a)->offset, y = (*(DistMessage* const*)b)->offset;
    return (x > y) - (x < y);
}

// Fails unless the buckets hold every gradient exactly once.
static void dist_params_check_buckets(const DistParams* dp) {
    DistMessage** sorted = (DistMessage**)malloc_check((size_t)dp->nmsgs * sizeof(DistMessage*));
    for (int i = 0; i < dp->nmsgs; i++) sorted[i] = &dp->msgs[i];
    qsort(sorted, (size_t)dp->nmsgs, sizeof(DistMessage*), compare_message_offsets);
    long covered = 0;
    for (int i = 0; i < dp->nmsgs && sorted[i]->offset == covered; i++) covered += sorted[i]->count;
    free(sorted);
    if (covered != dp->P->count)
        fail("the gradient buckets leave out or repeat parameters from %ld on (of %ld)", covered, dp->P->count);
}

// ZeRO-1: this rank's part of every message, and the shard that holds their
// gradients and moments, cut where tensors (and so weight decay) change.
static void dist_params_zero_shard(DistParams* dp) {
    const Dist* d = dp->dist;
    const Parameters* P = dp->P;
    ParamShard* s = &dp->shard;
    memset(s, 0, sizeof *s);
    s->split = d;
    for (int i = 0; i < dp->nmsgs; i++) {
        DistMessage* msg = &dp->msgs[i];
        msg->counts = (int*)malloc_check(2 * (size_t)d->size * sizeof(int));
        msg->displs = msg->counts + d->size;
        for (int r = 0; r < d->size; r++) {
            msg->displs[r] = (int)(msg->count * r / d->size);
            msg->counts[r] = (int)(msg->count * (r + 1) / d->size) - msg->displs[r];
        }
        msg->at = s->count;
        long lo = msg->offset + msg->displs[d->rank], hi = lo + msg->counts[d->rank];
        while (lo < hi) {
            const TensorInfo* t = tensor_at(P, lo);
            long end = t->offset + t->size < hi ? t->offset + t->size : hi;
            shard_add(s, lo, end - lo, s->count, t->decay);
            s->count += end - lo;
            lo = end;
        }
    }
    s->grads = (real*)calloc_check((size_t)s->count, sizeof(real));
    s->m = (real*)malloc_check((size_t)s->count * sizeof(real));
    s->v = (real*)malloc_check((size_t)s->count * sizeof(real));
}

// Once the buckets are declared, and rank 0's Parameters restored or initialised:
// checks the buckets, gives every rank rank 0's parameters and moments (so that
// no rank starts from a replica of its own), and lays out this rank's shard. With
// ZeRO-1 each rank gets only its part of the moments, in the shard, and the
// Parameters' are freed (on ranks other than 0 never touched, so never resident).
static void dist_params_share(DistParams* dp) {
    Parameters* P = dp->P;
    const Dist* d = dp->dist;
    dist_params_check_buckets(dp);
    dist_broadcast(d, P->params, (size_t)P->count * sizeof(real));
    if (!dp->zero) {
        dist_broadcast(d, P->m, (size_t)P->count * sizeof(real));
        dist_broadcast(d, P->v, (size_t)P->count * sizeof(real));
        dp->shard = param_shard_whole(P);
        return;
    }
    dist_params_zero_shard(dp);
    for (int i = 0; i < dp->nmsgs; i++) {
        const DistMessage* msg = &dp->msgs[i];
        dist_scatter(P->m + msg->offset, dp->shard.m + msg->at, msg->counts, msg->displs, d->rank);
        dist_scatter(P->v + msg->offset, dp->shard.v + msg->at, msg->counts, msg->displs, d->rank);
    }
    free(P->m);
    free(P->v);
    P->m = P->v = NULL;
}

static void dist_params_start(DistParams* dp, DistMessage* msg) {
    real* grads = dp->P->grads + msg->offset;
    if (dp->zero) dist_reduce_scatter_start(grads, dp->shard.grads + msg->at, msg->counts, &msg->request);
    else dist_allreduce_start(grads, msg->count, &msg->request);
    msg->started = 1;
}

// The backward pass is done with the gradients of `bucket`: starts their sum
// across the ranks, and lets the ones already started advance. dp NULL: nothing.
static void dist_params_ready(DistParams* dp, int bucket) {
    if (dp == NULL || dp->dist->size == 1) return;
    for (int i = 0; i < dp->nmsgs; i++) {
        DistMessage* msg = &dp->msgs[i];
        if (msg->bucket == bucket && !msg->started) dist_params_start(dp, msg);
        else if (msg->started) dist_progress(&msg->request);
    }
}

// After the backward passes of an update: every gradient summed across the ranks
// (with ZeRO-1, this rank's part of them in the shard).
static void dist_params_reduce(DistParams* dp) {
    if (dp->dist->size == 1) return;
    for (int i = 0; i < dp->nmsgs; i++)
        if (!dp->msgs[i].started) dist_params_start(dp, &dp->msgs[i]);
    for (int i = 0; i < dp->nmsgs; i++) {
        dist_wait(&dp->msgs[i].request);
        dp->msgs[i].started = 0;
    }
}

// After the optimizer step, with ZeRO-1: every rank's updated part to every rank.
static void dist_params_gather(DistParams* dp) {
    if (!dp->zero) return;
    for (int i = 0; i < dp->nmsgs; i++) {
        DistMessage* msg = &dp->msgs[i];
        dist_allgather_start(dp->P->params + msg->offset, msg->counts, msg->displs, &msg->request);
    }
    for (int i = 0; i < dp->nmsgs; i++) dist_wait(&dp->msgs[i].request);
}

// AdamW's moments of every parameter, for a checkpoint: the Parameters' own, or
// with ZeRO-1 gathered into m and v (P->count reals each) on rank 0 and returned
// there (NULL on the other ranks); the caller frees what differs from P->m, P->v.
static void dist_params_moments(const DistParams* dp, real** m, real** v) {
    *m = dp->P->m;
    *v = dp->P->v;
    if (!dp->zero) return;
    int root = dp->dist->rank == 0;
    *m = root ? (real*)malloc_check((size_t)dp->P->count * sizeof(real)) : NULL;
    *v = root ? (real*)malloc_check((size_t)dp->P->count * sizeof(real)) : NULL;
    for (int i = 0; i < dp->nmsgs; i++) {
        const DistMessage* msg = &dp->msgs[i];
        dist_gather(dp->shard.m + msg->at, root ? *m + msg->offset : NULL, msg->counts, msg->displs, dp->dist->rank);
        dist_gather(dp->shard.v + msg->at, root ? *v + msg->offset : NULL, msg->counts, msg->displs, dp->dist->rank);
    }
}

// Reals a rank holds for N parameters: parameters, gradients and AdamW's moments,
// with ZeRO-1 only its part of the moments, and its part of the reduced gradients.
static double dist_params_reals(const Dist* d, long N, int zero) {
    return zero && d->size > 1 ? 2.0 * N + 3.0 * N / d->size : 4.0 * N;
}

static void dist_params_free(DistParams* dp) {
    for (int i = 0; i < dp->nmsgs; i++) free(dp->msgs[i].counts);
    free(dp->msgs);
    if (dp->zero) {
        free(dp->shard.grads);
        free(dp->shard.m);
        free(dp->shard.v);
    }
    free(dp->shard.pieces);
    memset(dp, 0, sizeof *dp);
}

#endif
