#!/usr/bin/env bash
# Set up .venv (first run only) and run the offline demo: synthetic data -> folds -> train ->
# predict with TTA -> validated submission, on a CPU, no network needed after installation.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e .
exec .venv/bin/ncfm demo "$@"
