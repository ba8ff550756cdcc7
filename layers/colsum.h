// Column sums over the rows of an (N, width) array that do not depend on the
// thread count: the rows are cut into fixed blocks of COLSUM_ROWS, each block
// (one thread's) sums its rows in order into its own row of partials, and the
// partials are added up in block order. Backward passes use it to sum parameter
// gradients over rows in the same pass that walks the rows for everything else.
//   partial is (colsum_blocks(N), width).
#ifndef LAYERS_COLSUM_H
#define LAYERS_COLSUM_H

#include "utils/real.h"

#define COLSUM_ROWS 32

static inline int colsum_blocks(int N) { return (N + COLSUM_ROWS - 1) / COLSUM_ROWS; }

// sums (width) += the partials of all blocks, in block order.
static void colsum_reduce(real* sums, const real* partial, int nblocks, int width) {
    for (int b = 0; b < nblocks; b++) {
        const real* p = partial + (long)b * width;
#pragma omp simd
        for (int c = 0; c < width; c++) sums[c] += p[c];
    }
}

#endif
