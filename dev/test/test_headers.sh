#!/usr/bin/env bash
# Every header compiles on its own, in float32 and float64: each includes what it
# uses, so any of them can be read, reused or tested alone.
# Prints one PASS/FAIL line per header and precision (dev/run_tests.sh adds them up).
cd "$(dirname "$0")/../.."
CC=${CC:-gcc}
status=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for h in utils/*.h layers/*.h dev/test/*.h; do
    for precision in float32 float64; do
        flags=""
        [ "$precision" = float64 ] && flags="-DREAL_DOUBLE"
        printf '#include "%s"\n#include "%s"\nint main(void) { return 0; }\n' "$h" "$h" > "$tmp/one.c"
        if $CC -std=gnu11 -fopenmp -Wall -Wextra -Werror -Wno-unused-parameter -Wno-unused-function \
               -I. $flags -fsyntax-only "$tmp/one.c" > "$tmp/log" 2>&1; then
            echo "PASS $h compiles alone and twice over ($precision)"
        else
            echo "FAIL $h does not compile alone ($precision): $(grep -m1 -E 'error|warning' "$tmp/log")"
            status=1
        fi
    done
done
exit $status
