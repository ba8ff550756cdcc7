#!/usr/bin/env bash
# The default run: character-level tinyshakespeare with nanoGPT's CPU settings
# (configs/gpt_shakespeare.json), for one attention type; any further arguments
# override settings (e.g. --steps 500).
#   scripts/train_gpt_shakespeare.sh [flow|softmax|linear] [--FIELD VALUE]...
set -euo pipefail
cd "$(dirname "$0")/.."
ATTENTION="${1:-flow}"
shift || true
make -j2 train_gpt_flow data/tinyshakespeare/train.bin >/dev/null
exec ./train_gpt_flow --config configs/gpt_shakespeare.json --attention "$ATTENTION" "$@"
