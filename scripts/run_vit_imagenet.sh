#!/usr/bin/env bash
# The paper's ImageNet-1K run: the hierarchical Flowformer (channels 96-192-384-768,
# depths 3-3-10-3, 12 heads, LayerScale 1e-5 on the MLP branch, drop-path 0.2) with
# DeiT's recipe: AdamW lr 1e-3 for 1024 images per update (5e-4 per 512), weight decay
# 0.05, 300 epochs with 5 of warmup, label smoothing 0.1, mixup 0.8, cutmix 1.0, random
# 224 crops of 256 images and flips (RandomAugment and random-resized crops are not
# implemented). Needs a many-core machine: the trainer is the same OpenMP CPU program.
#   scripts/run_vit_imagenet.sh IMAGENET_DIR [CONFIG] [--FIELD VALUE]...
# CONFIG: configs/vit_flowformer_imagenet.json (default), vit_flowformer_imagenet_small.json,
# vit_deit_tiny.json, vit_deit_small.json. Shards go to data/imagenet (made once).
set -euo pipefail
cd "$(dirname "$0")/.."

SRC="${1:?usage: scripts/run_vit_imagenet.sh IMAGENET_DIR [CONFIG] [--FIELD VALUE]...}"
shift
CONFIG=configs/vit_flowformer_imagenet.json
if [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; then CONFIG="$1"; shift; fi
make -j"$(nproc)" train_vit_flow >/dev/null
ls data/imagenet/train_*.bin >/dev/null 2>&1 || scripts/prepare_imagenet.sh "$SRC" data/imagenet 256
./train_vit_flow --config "$CONFIG" "$@"
