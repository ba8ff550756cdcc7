#!/bin/sh
# Creates the virtual environment .venv/ (ignored by git) with dev/requirements.txt:
# the PyTorch peer of dev/bench_train.py. PYTHON picks the interpreter (default python3,
# 3.9 or newer; on Debian the venv module is the python3-venv package).
#   dev/setup_venv.sh            # or: make venv
set -e
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --upgrade pip
"$VENV/bin/python" -m pip install -r dev/requirements.txt
"$VENV/bin/python" -c "import torch; print('torch', torch.__version__, 'in', '$VENV')"
