"""How long the light `lifelong` commands take, from process start to exit: `--help`, `streams`,
`methods` and `configs`, each run `--repeats` times as a fresh subprocess (median reported), and
whether each imported torch. Acceptance (issue 10): `--help` and `streams` under 1.5 s.

    .venv/bin/python benchmarks/cli_startup.py            # the measurement
    .venv/bin/python benchmarks/cli_startup.py --quick    # one run of each: a check that the script works
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = (["--help"], ["streams"], ["methods"], ["configs"])
LIMIT_SECONDS = {"--help": 1.5, "streams": 1.5}  # the acceptance
# the same entry point as the `lifelong` script, and a report of whether torch was imported
PROGRAM = (
    "import atexit, sys; atexit.register(lambda: print('torch' in sys.modules, file=sys.stderr)); "
    "from lifelong.cli import main; main()"
)


def timed(args: list[str]) -> tuple[float, bool]:
    """Seconds from start to exit of `lifelong ARGS`, and whether it imported torch."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", PROGRAM, *args], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"lifelong {' '.join(args)} failed: {done.stderr.strip()}")
    return seconds, done.stderr.strip().splitlines()[-1] == "True"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="one run of each command")
    args = parser.parse_args()
    if args.quick:
        args.repeats = 1
    figures = {}
    print(f"lifelong CLI start-up, median of {args.repeats} fresh processes")
    print(f"{'command':18s} {'seconds':>8s}  torch  acceptance")
    failed = False
    for command in COMMANDS:
        runs = [timed(command) for _ in range(args.repeats)]
        seconds, torch = statistics.median(s for s, _ in runs), any(t for _, t in runs)
        limit = LIMIT_SECONDS.get(command[0])
        verdict = "" if limit is None else ("ok" if seconds < limit else f"over {limit} s")
        failed |= limit is not None and seconds >= limit
        print(f"lifelong {' '.join(command):9s} {seconds:8.2f}  {'yes' if torch else 'no':5s}  {verdict}")
        figures[command[0].removeprefix("--")] = f"{seconds:.2f}"
    print("RESULT cli_startup " + " ".join(f"{k}_s={v}" for k, v in figures.items()))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
