#!/usr/bin/env bash
# Set up .venv (first run only) and run the whole test suite, slow tests included.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[dev]'
# two workers, each taking whole test files (module fixtures are built once), longest first (tests/conftest.py);
# NCFM_TEST_WORKERS=0 runs in one process.
exec .venv/bin/python -m pytest -n "${NCFM_TEST_WORKERS:-2}" --dist loadfile --no-loadscope-reorder "$@"
