#!/usr/bin/env bash
# Runs each test program given on the command line and adds up their
# "PASS ..." / "FAIL ..." lines. A program that exits non-zero without
# printing a FAIL line (a crash, a failed assertion) counts as one failure.
set -u
passed=0
failed=0
for t in "$@"; do
    echo "== $t"
    out=$("$t" 2>&1)
    rc=$?
    echo "$out"
    p=$(grep -c '^PASS ' <<<"$out")
    f=$(grep -c '^FAIL ' <<<"$out")
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "FAIL $t exited with status $rc"
        f=1
    fi
    passed=$((passed + p))
    failed=$((failed + f))
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
