#!/usr/bin/env bash
# Set up (if needed) and run the test suite. pytest's "no tests collected" (exit 5) counts as failure.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
# headless Chromium renders the HTML report in tests/test_html_report.py (Debian's package, once)
if ! command -v chromium >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; } >/dev/null \
      || echo "warning: could not install chromium (apt-get install -y chromium)" >&2
  else
    echo "warning: chromium is missing (as root: apt-get install -y chromium); its test fails or skips" >&2
  fi
fi
# one pytest worker per core, one thread each; an idle worker takes tests queued for the other
# (the cores this process may use, counted before OMP_NUM_THREADS is set: `nproc` would obey it)
workers=$(.venv/bin/python -c "import os; print(len(os.sched_getaffinity(0)))")
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
.venv/bin/python -m pytest -q -p no:cacheprovider -n "$workers" --dist worksteal "$@"
code=$?
if [ "$code" -eq 5 ]; then
  echo "no tests were collected" >&2
  exit 1
fi
exit "$code"
