#!/usr/bin/env bash
# The README's Results: the paper's comparisons at laptop scale, every number and
# plot made by this script into results/ (logs, tables, plots).
#   scripts/run_results.sh [PART]...     PART: lm wikitext2 context vision kernels generate wt103 maps speed plots
#                                         (default: all, in that order; about two and a half hours on 2 cores)
# Each part writes results/<part>/; rerunning a part redoes it. The plots need
# matplotlib: `make venv` (dev/requirements.txt), then PYTHON=.venv/bin/python.
# Run it on an otherwise idle machine: the tables report speed and memory.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared/data}
PYTHON=${PYTHON:-.venv/bin/python}
KINDS="flow softmax linear"
PARTS=${*:-lm wikitext2 context vision kernels generate wt103 maps speed plots}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
make -j2 >/dev/null

# peak resident memory in MiB of a command, from GNU time; its output goes to $1
measured() {
    local out=$1
    shift
    /usr/bin/time -f "peak_rss_kb %M wall_s %e" -o "$out.time" "$@" > "$out" 2>&1
}

for part in $PARTS; do
    mkdir -p "results/$part"
    case $part in
    lm)
        # character-level tinyshakespeare, the default model and run, once per kind
        for k in $KINDS; do
            measured "results/lm/shakespeare_$k.out" ./train_gpt_flow --attention "$k" \
                --log_file "results/lm/shakespeare_$k.jsonl" --checkpoint "results/lm/shakespeare_$k.bin"
            ./train_gpt_flow --resume "results/lm/shakespeare_$k.bin" --mode eval --context_window 32 \
                --log_file "results/lm/shakespeare_${k}_window32.jsonl" > "results/lm/shakespeare_${k}_window32.out"
        done
        rm -f results/lm/*.bin
        ;;
    wikitext2)
        # word level; only the valid and test splits are at hand here: valid trains, test evaluates
        build/prepare_text words --train "$SHARED/wikitext-2/valid.txt" --valid "$SHARED/wikitext-2/test.txt" \
            data/wikitext-2 > results/wikitext2/prepare.out
        for k in $KINDS; do
            measured "results/wikitext2/$k.out" ./train_gpt_flow --config configs/gpt_wikitext2.json \
                --attention "$k" --log_file "results/wikitext2/$k.jsonl" --checkpoint "results/wikitext2/$k.bin"
            ./train_gpt_flow --config configs/gpt_wikitext2.json --attention "$k" --resume "results/wikitext2/$k.bin" \
                --mode eval --context_window 64 --log_file "results/wikitext2/${k}_test.jsonl" \
                > "results/wikitext2/${k}_test.out"
        done
        rm -f results/wikitext2/*.bin
        ;;
    context)
        # the character model at contexts 256, 1024 and 4096, 8192 tokens per update
        for T in 256 1024 4096; do
            for k in $KINDS; do
                measured "results/context/T${T}_$k.out" ./train_gpt_flow --attention "$k" --context "$T" \
                    --batch_size $((8192 / T)) --steps 300 --warmup_steps 30 --eval_interval 0 --eval_batches 8 \
                    --sample_tokens 0 --log_interval 50 --log_file "results/context/T${T}_$k.jsonl" --checkpoint ""
            done
        done
        ;;
    vision)
        # Fashion-MNIST, the configuration's model for 4 epochs per kind
        [ -f data/fashion-mnist/train_000000.bin ] || build/prepare_fashion_mnist "$SHARED/fashion-mnist" data/fashion-mnist
        for k in $KINDS; do
            measured "results/vision/fashion_$k.out" ./train_vit_flow --config configs/vit_fashion_mnist.json \
                --attention "$k" --epochs 4 --log_file "results/vision/fashion_$k.jsonl" \
                --checkpoint "results/vision/fashion_$k.bin"
        done
        ;;
    kernels)
        make -j2 build/bench_attention >/dev/null
        build/bench_attention > results/kernels/bench_attention.txt
        ;;
    generate)
        make -j2 build/bench_generate >/dev/null
        build/bench_generate > results/generate/bench_generate.txt
        ;;
    wt103)
        # the paper's configuration on shards with its 267,744-word vocabulary (WikiText-2's text)
        build/prepare_text words --train "$SHARED/wikitext-2/valid.txt" --valid "$SHARED/wikitext-2/test.txt" \
            --vocab-size 267744 /tmp/wt103_shape > results/wt103/prepare.out
        measured results/wt103/flow.out ./train_gpt_flow --config configs/gpt_wikitext103_flow.json \
            --train_data /tmp/wt103_shape/train.bin --val_data "" --vocab /tmp/wt103_shape/vocab.txt --steps 2 \
            --log_file results/wt103/flow.jsonl --checkpoint "" --sample_tokens 0
        ;;
    maps)
        # the flow picture of the Fashion-MNIST model on test images, and of a model trained
        # a little on the ImageNet sample
        make -j2 build/prepare_images >/dev/null
        # the first three Fashion-MNIST test images as PNG files (stdlib Python only)
        PYTHONPATH=dev /usr/bin/python3 - "$SHARED/fashion-mnist/t10k-images-idx3-ubyte.gz" results/maps <<'PY'
import gzip, sys
from grey_png import write_grey_png
images = gzip.open(sys.argv[1]).read()
for i in range(3):
    write_grey_png(f"{sys.argv[2]}/fashion_test_{i + 1}.png", 28, 28, images[16 + 784 * i:16 + 784 * (i + 1)])
PY
        : > results/maps/maps.out
        for i in 1 2 3; do
            ./train_vit_flow --resume results/vision/fashion_flow.bin --visualize "results/maps/fashion_test_$i.png" \
                --visualize_out "results/maps/fashion_$i.png" >> results/maps/maps.out
        done
        build/prepare_images --size 64 --synsets "$SHARED/imagenet-sample/synsets.txt" \
            "$SHARED/imagenet-sample/val" /tmp/inet64/val > results/maps/prepare.out
        ./train_vit_flow --train_data "/tmp/inet64/val_*.bin" --val_data "/tmp/inet64/val_*.bin" --image_size 64 \
            --channels 3 --patch_size 8 --dims 96 --depths 4 --heads 4 --mean "" --std "" --flip true \
            --batch_size 16 --epochs 30 --lr 5e-4 --warmup_epochs 2 --log_interval 100 \
            --log_file results/maps/imagenet_sample.jsonl --checkpoint /tmp/inet64/flow.bin > results/maps/imagenet_sample.out
        i=0
        for img in "$SHARED"/imagenet-sample/val/*/*; do
            i=$((i + 1))
            [ $i -le 3 ] || break
            ./train_vit_flow --resume /tmp/inet64/flow.bin --visualize "$img" \
                --visualize_out "results/maps/imagenet_$i.png" >> results/maps/maps.out
        done
        ;;
    speed)
        # the training step: the FMA peak, our matrix multiply against OpenBLAS, and the
        # trainers against their PyTorch peers in one interleaved run
        make -j2 build/bench_peak build/bench_matmul >/dev/null
        build/bench_peak > results/speed/bench_peak.txt
        build/bench_matmul > results/speed/bench_matmul.txt
        DATA="$SHARED" "$PYTHON" dev/bench_train.py --json results/speed/bench_train.json > results/speed/bench_train.txt
        ;;
    plots)
        "$PYTHON" dev/plot_results.py results
        ;;
    *)
        echo "unknown part $part (lm wikitext2 context vision kernels generate wt103 maps speed plots)" >&2
        exit 1
        ;;
    esac
done
