#!/usr/bin/env bash
# Install ris_ray (+ test tools) into .venv with pinned torch/ray/lance and run every check.
# Usage: bash scripts/test.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -c constraints.txt -e ".[test]"
src=""
for d in ris_ray tests jobs benchmarks; do [ -d "$d" ] && src="$src $d"; done
.venv/bin/ruff check $src
.venv/bin/ruff format --check $src
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
