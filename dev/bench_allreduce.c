// The time to sum the gradients of the paper's WikiText-103 model (configs/
// gpt_wikitext103_flow.json: 6 layers of 512 channels, the 267,744-word vocabulary,
// tied output layer, 156,000,256 parameters) across the ranks, through the trainer's
// own buckets (gpt_buckets, utils/dist.h): all-reduced, and with ZeRO-1 reduce-scattered
// then all-gathered. No backward pass runs, so nothing overlaps: this is the whole cost.
// Run under mpirun (dev/bench_allreduce.sh runs it over shared memory and over TCP
// between two network namespaces); rank 0 prints.
#include "train_gpt_flow.c"

// One update's sum: the buckets in the order gpt_backward finishes them, the wait,
// and with ZeRO-1 the all-gather of the parameters.
static void sum_gradients(DistParams* dp, int L) {
    dist_params_ready(dp, L);
    for (int l = L - 1; l >= 0; l--) dist_params_ready(dp, l);
    dist_params_ready(dp, L + 1);
    dist_params_reduce(dp);
    dist_params_gather(dp);
}

static int compare_doubles(const void* a, const void* b) {
    double x = *(const double*)a, y = *(const double*)b;
    return (x > y) - (x < y);
}

int main(int argc, char** argv) {
    Dist dist = dist_init(&argc, &argv);
    GPTConfig c = {0};
    c.V = 267744;
    c.maxT = 512;
    c.L = 6;
    c.H = 8;
    c.C = 512;
    c.F = 2048;
    c.attention = "flow";
    c.tied = 1;
    c.embed_scale = 1;
    GPT model;
    gpt_build(&model, &c);
    Parameters* P = &model.params;
    for (long i = 0; i < P->count; i++) P->grads[i] = P->params[i] = (real)1e-3 * (real)(i % 1000);
    enum { REPS = 5 };
    double bytes = (double)P->count * sizeof(real);
    printf("%d ranks, %d on this host; %ld parameters, %.1f MB of gradients per update\n", dist.size,
           dist.local_size, P->count, bytes / 1e6);
    for (int zero = 0; zero <= 1; zero++) {
        DistParams dp = dist_params_make(&dist, P, zero);
        gpt_buckets(&model, &dp);
        dist_params_share(&dp);
        double t[REPS];
        for (int r = 0; r < REPS; r++) {
            MPI_Barrier(MPI_COMM_WORLD);
            double t0 = omp_get_wtime();
            sum_gradients(&dp, c.L);
            t[r] = omp_get_wtime() - t0;
            MPI_Allreduce(MPI_IN_PLACE, &t[r], 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD); // the slowest rank's
        }
        qsort(t, REPS, sizeof(double), compare_doubles);
        // a ring all-reduce sends 2 (N-1)/N of the bytes from every rank; a
        // reduce-scatter and an all-gather (N-1)/N each: the same
        double sent = 2.0 * (dist.size - 1) / dist.size * bytes;
        printf("%-34s %3d messages: best %.3f s, median %.3f s of %d; %.1f MB sent per rank, %.2f Gbit/s\n",
               zero ? "ZeRO-1 reduce-scatter + all-gather" : "all-reduce", dp.nmsgs, t[0], t[REPS / 2], REPS,
               sent / 1e6, sent * 8 / t[0] / 1e9);
        dist_params_free(&dp);
    }
    gpt_free(&model);
    dist_finalize();
    return 0;
}
