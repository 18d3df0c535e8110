#!/usr/bin/env bash
# Accelerator readiness benchmark (see benchmarks/accelerator.py): under 8 minutes
# on one GPU; `--tiny` runs the same code at a tiny size on any machine.
#   bash benchmarks/accelerator.sh [--tiny] [--out results/accelerator.json]
set -euo pipefail
cd "$(dirname "$0")/.."
exec timeout 900 python benchmarks/accelerator.py "$@"
