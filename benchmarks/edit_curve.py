"""The reliability of an edit stream's first edits over the whole stream, read from finished runs.

For each run (a finished `edits` run directory): the mean reliability of the columns holding the
first `--first` edits (100: the first 10 tasks at the default 10 edits a task), weighted by their
edits, after every task (before the first `--first` are all made: over those made so far): the curve
that shows what later edits did to earlier ones. Prints every `--every`-th task as a table and draws
the whole curve into `--plot` (one line per run).

    .venv/bin/python benchmarks/edit_curve.py RUN_DIR... --plot docs/img/edits_first100.png
"""

from __future__ import annotations

import argparse
import json
from itertools import accumulate
from pathlib import Path


def first_edits_curve(run: Path, first: int) -> tuple[str, list[int], list[float]]:
    """The run's name, the tasks after which the curve is read (1-based), and its values."""
    matrix = json.loads((run / "matrix.json").read_text())
    per_task = [int(n) for n in json.loads((run / "summary.json").read_text())["edits"]["per_task"]]
    columns = max(1, sum(n <= first for n in accumulate(per_task)))
    weights = per_task[:columns]
    rows = matrix["rows"]
    tasks = list(range(1, len(rows) + 1))
    values = []
    for k in tasks:  # over the first edits made by task k (all of them from task `columns` on)
        made = weights[: min(k, columns)]
        values.append(sum(rows[k - 1][j] * w for j, w in enumerate(made)) / sum(made))
    return run.name, tasks, values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--first", type=int, default=100, help="the first this many edits")
    parser.add_argument("--every", type=int, default=10, help="print every this many tasks")
    parser.add_argument("--plot", type=Path, help="write the curves to this PNG")
    args = parser.parse_args()
    curves = [first_edits_curve(run, args.first) for run in args.runs]
    tasks = curves[0][1]
    shown = [k for k in tasks if k in (1, 5) or k % args.every == 0 or k == tasks[-1]]
    print(
        f"reliability of the first {args.first} edits after task k (all past edits judged after every task)"
    )
    print("| after task | " + " | ".join(name for name, _, _ in curves) + " |")
    print("|---|" + "---|" * len(curves))
    for k in shown:
        cells = [f"{values[ks.index(k)]:.3f}" if k in ks else "" for _, ks, values in curves]
        print(f"| {k} | " + " | ".join(cells) + " |")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.4))
        for name, ks, values in curves:
            ax.plot(ks, values, label=name)
        ax.set_xlabel("after task k (10 edits a task)")
        ax.set_ylabel(f"reliability, first {args.first} edits")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot, dpi=120)
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
