#!/usr/bin/env bash
# Smoke run of the ImageNet presets on a few images at 224x224: the first N images of
# an ImageNet folder (one per class in ../shared/data/imagenet-sample/val) as 256x256
# shards, then STEPS updates of each preset on them without augmentation, so the loss
# falls as the model over-fits them. Prints images/s and activation memory per image.
#   scripts/run_vit_imagenet_sample.sh [IMAGE_DIR] [N] [STEPS] [BATCH]
# IMAGE_DIR holds class folders, its parent synsets.txt (default
# ../shared/data/imagenet-sample/val); N 16, STEPS 12, BATCH 8.
set -euo pipefail
cd "$(dirname "$0")/.."

SRC="${1:-../shared/data/imagenet-sample/val}"
N="${2:-16}"
STEPS="${3:-12}"
BATCH="${4:-8}"
make -j2 train_vit_flow build/prepare_images >/dev/null
OUT="data/imagenet/sample$N"
if ! ls "$OUT"/train_*.bin >/dev/null 2>&1; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    for d in $(ls "$SRC" | LC_ALL=C sort | head -n "$N"); do ln -s "$(cd "$SRC/$d" && pwd)" "$tmp/$d"; done
    mkdir -p "$OUT"
    build/prepare_images --size 256 --synsets "$(dirname "$SRC")/synsets.txt" "$tmp" "$OUT/train"
fi
for config in vit_deit_tiny vit_deit_small vit_flowformer_imagenet_small vit_flowformer_imagenet; do
    echo "== $config"
    ./train_vit_flow --config "configs/$config.json" --train_data "$OUT/train_*.bin" --val_data "" \
        --steps "$STEPS" --batch_size "$BATCH" --grad_accum 1 --warmup_epochs 0 --lr 5e-4 --min_lr 5e-4 \
        --mixup 0 --cutmix 0 --label_smoothing 0 --flip false --drop_path 0 --log_interval 1 \
        --checkpoint "" --log_file ""
done
