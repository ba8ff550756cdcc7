#!/usr/bin/env bash
# WikiText-103 as token shards for ./train_gpt_flow: downloads the tokenised release (or takes
# a local folder holding wiki.{train,valid,test}.tokens) and runs build/prepare_text words.
#   scripts/prepare_wikitext103.sh [--local DIR] [OUTDIR]      (OUTDIR: data/wikitext-103)
# Expected, as fairseq-preprocess gives: 267,744 vocabulary entries; train 103,227,021 tokens.
set -euo pipefail
cd "$(dirname "$0")/.."

SRC=""
if [ "${1:-}" = "--local" ]; then
    SRC="$2"
    shift 2
fi
OUT="${1:-data/wikitext-103}"
make -j2 build/prepare_text >/dev/null

if [ -z "$SRC" ]; then
    SRC="$OUT/raw/wikitext-103"
    if [ ! -f "$SRC/wiki.train.tokens" ]; then
        mkdir -p "$OUT/raw"
        zip="$OUT/raw/wikitext-103-v1.zip"
        for url in https://wikitext.smerity.com/wikitext-103-v1.zip \
                   https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-103-v1.zip; do
            echo "downloading $url"
            if curl -fL --retry 3 -o "$zip.part" "$url" || wget -O "$zip.part" "$url"; then
                mv "$zip.part" "$zip"
                break
            fi
        done
        [ -f "$zip" ] || { echo "error: could not download WikiText-103; pass --local DIR" >&2; exit 1; }
        (cd "$OUT/raw" && unzip -o -q wikitext-103-v1.zip)
    fi
fi
for f in wiki.train.tokens wiki.valid.tokens wiki.test.tokens; do
    [ -f "$SRC/$f" ] || { echo "error: $SRC/$f is missing" >&2; exit 1; }
done

build/prepare_text words --dir "$SRC" "$OUT" | tee "$OUT/prepare.log"
V=$(wc -l < "$OUT/vocab.txt")
if [ "$V" -ne 267744 ]; then
    echo "warning: $V vocabulary entries, fairseq's WikiText-103 dictionary has 267,744" >&2
fi
