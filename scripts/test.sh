#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh) and runs the test suite, lint and type checks.
# Slow benchmarks are marked `slow` and excluded; run them with: .venv/bin/pytest -m slow
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check src tests benchmarks
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
