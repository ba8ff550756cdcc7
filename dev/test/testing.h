// Minimal test harness. Each test program prints one line per check,
// "PASS name" or "FAIL name: why", and exits non-zero if any check failed.
// dev/run_tests.sh adds the lines of all programs up into "N passed, N failed".
#ifndef DEV_TEST_TESTING_H
#define DEV_TEST_TESTING_H

#include <stdio.h>
#include <stdarg.h>
#include <math.h>

static int testing_passed = 0, testing_failed = 0;

// Records one check: prints PASS or FAIL with the formatted name.
static void check(int ok, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
static void check(int ok, const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf(ok ? "PASS " : "FAIL ");
    vprintf(fmt, ap);
    printf("\n");
    fflush(stdout);
    va_end(ap);
    if (ok) testing_passed++; else testing_failed++;
}

// Largest |a-b| / max(|a|,|b|, floor) over n elements; floor keeps tiny
// entries from dominating a relative error.
static double max_rel_err(const double* a, const double* b, long n, double floor) {
    double worst = 0.0;
    for (long i = 0; i < n; i++) {
        double scale = fmax(fmax(fabs(a[i]), fabs(b[i])), floor);
        double e = fabs(a[i] - b[i]) / scale;
        if (!(e <= worst)) worst = e; // also catches NaN
    }
    return worst;
}

static int testing_exit_code(void) { return testing_failed == 0 ? 0 : 1; }

#endif
