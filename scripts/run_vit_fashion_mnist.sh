#!/usr/bin/env bash
# Fashion-MNIST with a small Vision Transformer and Flow-Attention on a laptop CPU:
# 28x28 images in 7x7 patches (16 tokens), 6 blocks of 128 channels, configs/vit_fashion_mnist.json.
#   scripts/run_vit_fashion_mnist.sh [--FIELD VALUE]...   (e.g. --attention softmax)
# Prepares data/fashion-mnist first if needed (scripts/prepare_fashion_mnist.sh).
# Set OMP_NUM_THREADS=1 when other programs share the cores: OpenMP's barriers
# stall badly when its threads are descheduled.
set -euo pipefail
cd "$(dirname "$0")/.."

make -j2 train_vit_flow >/dev/null
[ -f data/fashion-mnist/train_000000.bin ] || scripts/prepare_fashion_mnist.sh
./train_vit_flow --config configs/vit_fashion_mnist.json "$@"
