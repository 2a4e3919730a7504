"""Evaluation's share of the default jobs' time: the built-in configs `toy_naive` and
`toy_self_replay`, run as a user runs them (`lifelong.load_config` + `lifelong.run`; output in a
temporary directory, no progress bar).

Per run: eval_seconds / (train_seconds + eval_seconds), both as the run records them (its summary's
times: every evaluation of the stream, including the initial one, against the training steps), and
the wall time of `lifelong.run` ("other" = wall - train - eval: setup, checkpoints, result files and
the plot). Combined: the two runs' eval seconds over their train + eval seconds. Runs alternate
between the configs; each figure is the median over repeats.

    .venv/bin/python benchmarks/eval_share.py            # the measurement (the configs as shipped)
    .venv/bin/python benchmarks/eval_share.py --quick    # a check: 20 steps per task, smaller batches
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import add_threads_option, apply_threads, header, median, print_table, quiet, result_line  # noqa: E402

import lifelong  # noqa: E402

CONFIGS = ["toy_naive", "toy_self_replay"]


def run_config(name: str, overrides: dict) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-eval-share-") as tmp:
        cfg = lifelong.load_config(name, {**overrides, "output_dir": tmp, "progress": False})
        start = time.perf_counter()
        result = lifelong.run(cfg, show_progress=False)
        wall = time.perf_counter() - start
    train, evals = result.progress.train_seconds, result.progress.eval_seconds
    return {
        "train": train,
        "eval": evals,
        "wall": wall,
        "share": evals / (train + evals),
        "steps": cfg.train.steps_per_task,
        "batch_size": cfg.train.batch_size,
        "eval_every": cfg.train.eval_every,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="steps_per_task 20, batch_size 32, 2000 train rows per task: check that the script works",
    )
    parser.add_argument("--steps-per-task", type=int, default=None, help="override the configs' value")
    parser.add_argument("--batch-size", type=int, default=None, help="override the configs' value")
    parser.add_argument("--repeats", type=int, default=None, help="runs of each config (default 3)")
    add_threads_option(parser)
    args = parser.parse_args()
    apply_threads(args)
    repeats = args.repeats or (1 if args.quick else 3)
    overrides = {}
    steps, batch_size = (
        args.steps_per_task or (20 if args.quick else None),
        args.batch_size or (32 if args.quick else None),
    )
    if steps:
        overrides["train.steps_per_task"] = steps
    if batch_size:
        overrides["train.batch_size"] = batch_size
    if args.quick:  # a smaller stream to tokenize (the toy default is 20000 rows, capped by the task)
        overrides["stream.options.n_train"] = 2000

    quiet()
    header(f"eval_share: {', '.join(CONFIGS)}, {repeats} repeats, overrides {overrides or 'none'}")
    runs: dict[str, list[dict]] = {name: [] for name in CONFIGS}
    combined, rows = [], []
    for r in range(repeats):
        order = CONFIGS if r % 2 == 0 else CONFIGS[::-1]
        out = {name: run_config(name, overrides) for name in order}
        for name in CONFIGS:
            runs[name].append(out[name])
            o = out[name]
            rows.append(
                [
                    r + 1,
                    name,
                    o["train"],
                    o["eval"],
                    o["wall"] - o["train"] - o["eval"],
                    o["wall"],
                    f"{o['share']:.1%}",
                ]
            )
        evals = sum(o["eval"] for o in out.values())
        combined.append(evals / sum(o["train"] + o["eval"] for o in out.values()))

    print()
    print_table(["repeat", "config", "train s", "eval s", "other s", "wall s", "eval share"], rows, ".2f")
    first = runs[CONFIGS[0]][0]
    print(
        f"\nsteps_per_task {first['steps']}, batch_size {first['batch_size']}, eval_every "
        f"{first['eval_every']}; eval share = eval / (train + "
        "eval), other = wall - train - eval (setup, checkpoints, results)\n"
    )
    figures = {}
    for name in CONFIGS:
        figures[f"{name}_share"] = median(o["share"] for o in runs[name])
        figures[f"{name}_wall_s"] = median(o["wall"] for o in runs[name])
    result_line(
        "eval_share",
        combined_share_median=median(combined),
        target=0.15,
        **figures,
        repeats=repeats,
        steps_per_task=first["steps"],
        batch_size=first["batch_size"],
    )


if __name__ == "__main__":
    main()
