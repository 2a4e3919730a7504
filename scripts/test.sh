#!/usr/bin/env bash
# Set up (if needed) and run the test suite. pytest's "no tests collected" (exit 5) counts as failure.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
code=$?
if [ "$code" -eq 5 ]; then
  echo "no tests were collected" >&2
  exit 1
fi
exit "$code"
