#!/usr/bin/env bash
# Install ris_ray into .venv with pinned torch/ray/lance and run `ris demo`:
# generated sample GeoTIFFs -> embedded Ray -> local Lance dataset -> query + plot.
# Usage: bash scripts/demo.sh [ris demo options]
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -c constraints.txt -e .
exec .venv/bin/ris demo "$@"
