#!/usr/bin/env bash
# ImageNet-1K from a local copy as image shards for the vision trainer.
#   scripts/prepare_imagenet.sh IMAGENET_DIR [OUTDIR] [SIZE]    (OUTDIR: data/imagenet, SIZE: 256)
# IMAGENET_DIR holds train/<wnid>/*.JPEG and val/<wnid>/*.JPEG (val sorted into class folders,
# as most copies are). Class indices follow the sorted wnids of IMAGENET_DIR/synsets.txt or
# LOC_synset_mapping.txt if present, else of the train folders. Writes
# OUTDIR/train_NNNNNN.bin and OUTDIR/val_NNNNNN.bin; use SIZE=64 or so for laptop runs.
set -euo pipefail
cd "$(dirname "$0")/.."

SRC="${1:?usage: scripts/prepare_imagenet.sh IMAGENET_DIR [OUTDIR] [SIZE]}"
OUT="${2:-data/imagenet}"
SIZE="${3:-256}"
make -j2 build/prepare_images >/dev/null
mkdir -p "$OUT"

if [ -f "$SRC/synsets.txt" ]; then
    cp "$SRC/synsets.txt" "$OUT/synsets.txt"
elif [ -f "$SRC/LOC_synset_mapping.txt" ]; then
    cp "$SRC/LOC_synset_mapping.txt" "$OUT/synsets.txt"
else
    ls "$SRC/train" | LC_ALL=C sort > "$OUT/synsets.txt"
fi

for split in train val; do
    if [ -d "$SRC/$split" ]; then
        build/prepare_images --size "$SIZE" --synsets "$OUT/synsets.txt" "$SRC/$split" "$OUT/$split"
    else
        echo "skip $split: $SRC/$split is absent"
    fi
done
