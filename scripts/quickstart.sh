#!/usr/bin/env bash
# Set up (if needed) and run the whole experiment on the embedded photos: baseline, then target (+ FAIG).
# Extra arguments are Hydra overrides, e.g. `bash scripts/quickstart.sh logger=csv`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/faig-train experiment=quickstart "$@"
