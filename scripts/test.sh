#!/usr/bin/env bash
# Install ris_ray (+ test tools) into .venv with pinned torch/ray/lance and run every check.
# Usage: bash scripts/test.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
# Headless Chromium + its WebDriver for the browser test (tests/test_serve.py), from
# Debian's packages; CI runs as root. Skipped when already installed or not root.
if ! { [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; } && [ "$(id -u)" = 0 ] \
    && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq chromium chromium-driver >/dev/null
fi
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -c constraints.txt -e ".[test]"
# The docs (docs/, mkdocs.yml): a broken link, #anchor or missing page fails. No -q: mkdocs 1.6.1
# hides the warnings that --strict counts under -q and then exits 0.
.venv/bin/mkdocs build --strict -d site >/dev/null
.venv/bin/python scripts/check_doc_links.py  # README.md's links into docs/, which mkdocs does not see
src=""
for d in ris_ray tests jobs benchmarks; do [ -d "$d" ] && src="$src $d"; done
.venv/bin/ruff check $src
.venv/bin/ruff format --check $src
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
