#!/usr/bin/env bash
# The test command: installs what is needed, then lint, types and the whole test suite:
# tests/unit, and tests/cluster (real end-to-end runs on local clusters; needs root, and is
# skipped with the reason without it).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
bash examples/install.sh --dev
echo "==> ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "==> mypy"
.venv/bin/mypy
echo "==> pytest"
set +e
.venv/bin/python -m pytest -q -p no:cacheprovider --durations=15 "$@"
code=$?
set -e
if [[ $code -eq 5 ]]; then
  echo "pytest collected no tests: that is a failure" >&2
  exit 1
fi
exit $code
