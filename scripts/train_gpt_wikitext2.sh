#!/usr/bin/env bash
# A few-minute sanity run of the WikiText setup (word level, sinusoidal positions,
# ReLU, dropout, inverse_sqrt schedule) on WikiText-2 with a small model
# (configs/gpt_wikitext2.json), then the test perplexity with a sliding window.
#   scripts/train_gpt_wikitext2.sh [flow|softmax] [DIR] [--FIELD VALUE]...
# DIR holds wiki.{train,valid,test}.tokens, or just valid.txt and test.txt (as
# ../shared/data/wikitext-2 does: then valid trains and test evaluates).
set -euo pipefail
cd "$(dirname "$0")/.."
ATTENTION="${1:-flow}"
DIR="${2:-../shared/data/wikitext-2}"
shift 2 || shift $# || true
OUT=data/wikitext-2
make -j2 train_gpt_flow build/prepare_text >/dev/null
if [ ! -f "$OUT/train.bin" ]; then
    if [ -f "$DIR/wiki.train.tokens" ]; then
        build/prepare_text words --dir "$DIR" "$OUT"
    elif [ -f "$DIR/valid.txt" ] && [ -f "$DIR/test.txt" ]; then
        build/prepare_text words --train "$DIR/valid.txt" --valid "$DIR/test.txt" --test "$DIR/test.txt" "$OUT"
    else
        echo "error: $DIR holds neither wiki.train.tokens nor valid.txt and test.txt" >&2
        exit 1
    fi
fi
./train_gpt_flow --config configs/gpt_wikitext2.json --attention "$ATTENTION" "$@"
./train_gpt_flow --config configs/gpt_wikitext2.json --attention "$ATTENTION" "$@" \
    --resume "log/gpt_wikitext2_${ATTENTION}.bin" --mode eval --val_data "$OUT/test.bin" --context_window 64 --eval_batches 0 \
    --log_file "log/gpt_wikitext2_${ATTENTION}_test.jsonl"
