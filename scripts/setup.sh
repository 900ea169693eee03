#!/usr/bin/env bash
# Creates .venv and installs eoca with its test tools and the optional engines and peers (Dask, lifetimes,
# scikit-uplift) so that every test runs. Safe to re-run.
# torch is installed first and pinned: an unpinned torch would pull several GB of CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "torch==2.13.0"
.venv/bin/python -m pip install --quiet -e ".[dev,dask,peers]"
