// Prints this machine's measured float32 FMA peak (utils/peak.h) on 1 and 2
// threads, and the vector ISA it used. Run with `make bench-peak`.
#include <stdio.h>
#include "utils/peak.h"

int main(void) {
    for (int threads = 1; threads <= 2; threads++) {
        Peak p = peak_measure(threads);
        printf("fp32 FMA peak, %d thread%s: %7.1f GFLOP/s (%s)\n", threads, threads > 1 ? "s" : " ", p.gflops, p.isa);
    }
    return 0;
}
