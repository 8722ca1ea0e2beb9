#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite, slow end-to-end tests included. pytest's exit code is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export WANDB_SILENT=true
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -q "$@"
