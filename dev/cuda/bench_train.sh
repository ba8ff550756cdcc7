#!/usr/bin/env bash
# Tokens per second of the paper's WikiText-103 configuration on the GPU
# (configs/gpt_wikitext103_flow.json: 6 layers, 512 channels, 8 heads, the 267,744-word
# vocabulary, 4 x 512 tokens per micro-batch, 16 micro-batches per update), with
# Flow-Attention and with softmax attention, float32 and TF32 products. The data are
# tinyshakespeare's words with the vocabulary padded to WikiText-103's size
# (build/prepare_text words --vocab-size 267744), so every number but the loss is
# that of the real run. Run with `make bench-cuda`; STEPS updates each (default 12).
set -euo pipefail
cd "$(dirname "$0")/../.."
STEPS=${STEPS:-12}
data=$(mktemp -d)
trap 'rm -rf "$data"' EXIT
build/prepare_text words --train data/tinyshakespeare/input.txt --vocab-size 267744 "$data" > /dev/null
printf '%-10s %-8s %14s %12s %8s\n' attention products "ms per update" "tokens/s" MFU
for attention in flow softmax; do
    for tf32 in false true; do
        line=$(./train_gpt_flow_cuda --config configs/gpt_wikitext103_flow.json --attention "$attention" \
            --tf32 "$tf32" --train_data "$data/train.bin" --val_data "" --vocab "$data/vocab.txt" \
            --steps "$STEPS" --eval_interval 0 --sample_tokens 0 --log_file "" --checkpoint "" | grep '^average')
        # "average 123.4 ms per update (265432 tok/s, MFU 45%); 0.3 minutes in all"
        ms=$(sed -E 's/^average ([0-9.]+) ms.*/\1/' <<<"$line")
        toks=$(sed -E 's/.*\(([0-9]+) tok\/s.*/\1/' <<<"$line")
        mfu=$(sed -E 's/.*MFU ([0-9]+%).*/\1/' <<<"$line")
        printf '%-10s %-8s %14s %12s %8s\n' "$attention" "$([ "$tf32" = true ] && echo TF32 || echo float32)" \
            "$ms" "$toks" "$mfu"
    done
done
echo "(MFU against the GPU's float32 peak on its CUDA cores: TF32 products run on the tensor cores, beyond it)"
