#!/usr/bin/env bash
# Fashion-MNIST as image shards (28x28, 1 channel, 10 classes).
#   scripts/prepare_fashion_mnist.sh [IDX_DIR] [OUTDIR]      (OUTDIR: data/fashion-mnist)
# IDX_DIR holds the four IDX files (.gz or not). Without it: Debian's dataset-fashion-mnist
# folder /usr/share/datasets/fashion-mnist if installed, else a download from Zalando's site.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT="${2:-data/fashion-mnist}"
SRC="${1:-}"
make -j2 build/prepare_fashion_mnist >/dev/null
if [ -z "$SRC" ]; then
    if [ -d /usr/share/datasets/fashion-mnist ]; then
        SRC=/usr/share/datasets/fashion-mnist
    else
        SRC="$OUT/raw"
        mkdir -p "$SRC"
        base=http://fashion-mnist.s3-website.eu-central-1.amazonaws.com
        for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
            [ -f "$SRC/$f.gz" ] || curl -fL --retry 3 -o "$SRC/$f.gz" "$base/$f.gz" || wget -O "$SRC/$f.gz" "$base/$f.gz"
        done
    fi
fi
build/prepare_fashion_mnist "$SRC" "$OUT"
