#!/usr/bin/env bash
# The paper's WikiText-103 language model (fairseq's transformer_lm with Flow-Attention,
# configs/gpt_wikitext103_flow.json), or its softmax baseline, then the test perplexity
# with fairseq-eval-lm's sliding window (--context-window 400).
#   scripts/prepare_wikitext103.sh                       # once: data/wikitext-103/
#   scripts/train_gpt_wikitext103.sh [flow|softmax] [--FIELD VALUE]...
# Rerunning continues from the last checkpoint (log/gpt_wikitext103_<attention>.bin).
# 150,000 updates of 32,768 tokens: a multi-day run on a CPU, as it is on one GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
ATTENTION="${1:-flow}"
shift || true
CONFIG="configs/gpt_wikitext103_${ATTENTION}.json"
CKPT="log/gpt_wikitext103_${ATTENTION}.bin"
[ -f "$CONFIG" ] || { echo "error: no configuration $CONFIG (flow or softmax)" >&2; exit 1; }
[ -f data/wikitext-103/train.bin ] || { echo "error: data/wikitext-103 is missing; run scripts/prepare_wikitext103.sh" >&2; exit 1; }
make -j2 train_gpt_flow >/dev/null
if [ -f "$CKPT" ]; then
    ./train_gpt_flow --config "$CONFIG" --resume "$CKPT" "$@"
else
    ./train_gpt_flow --config "$CONFIG" "$@"
fi
./train_gpt_flow --config "$CONFIG" --resume "$CKPT" --mode eval --val_data data/wikitext-103/test.bin \
    --context_window 400 --batch_size 1 --log_file "log/gpt_wikitext103_${ATTENTION}_test.jsonl"
