#!/usr/bin/env bash
# The headers the GPU trainer shares with the CPU one compile as C++ too: nvcc compiles
# train_gpt_flow.cu's host code as C++, with utils/*.h and models/gpt.h (the settings,
# the model's table of tensors). models/*.h also compile alone as C, in both precisions,
# as test_headers.sh checks of utils/ and layers/. Prints PASS/FAIL lines.
cd "$(dirname "$0")/../.."
CC=${CC:-gcc}
CXX=${CXX:-g++}
status=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
flags="-fopenmp -Wall -Wextra -Werror -Wno-unused-parameter -Wno-unused-function -I. -fsyntax-only"
for h in models/*.h; do
    for precision in float32 float64; do
        extra=""
        [ "$precision" = float64 ] && extra="-DREAL_DOUBLE"
        printf '#include "%s"\n#include "%s"\nint main(void) { return 0; }\n' "$h" "$h" > "$tmp/one.c"
        if $CC -std=gnu11 $flags $extra "$tmp/one.c" > "$tmp/log" 2>&1; then
            echo "PASS $h compiles alone and twice over ($precision)"
        else
            echo "FAIL $h does not compile alone ($precision): $(grep -m1 -E 'error|warning' "$tmp/log")"
            status=1
        fi
    done
done
for h in utils/*.h models/*.h; do echo "#include \"$h\""; done > "$tmp/all.cpp"
echo 'int main(void) { return 0; }' >> "$tmp/all.cpp"
if $CXX -std=c++17 $flags "$tmp/all.cpp" > "$tmp/log" 2>&1; then
    echo "PASS utils/*.h and models/*.h compile as C++ (the GPU trainer's host code)"
else
    echo "FAIL utils/*.h and models/*.h do not compile as C++: $(grep -m1 -E 'error|warning' "$tmp/log")"
    status=1
fi
exit $status
