"""The step-time cost of the regularization and distillation methods over naive fine-tuning.

One run per method of the same two-task toy config (`naive`, then each of `METHODS`). The second
task is timed, when every method is active (anchors, Fisher, teacher): the `train_seconds` the run
records for it (per-step timers: the method hooks, the forward/backward and the optimizer step)
divided by its steps. Each method's step time is divided by naive's step time of the same repeat;
the runs of a repeat alternate (the order rotates every repeat) after one untimed warm-up of each,
and the figures are medians over repeats.

EWC's Fisher pass (after each task) is timed by replacing `lifelong.methods.ewc.diagonal_fisher`,
the module attribute the method calls, with a timed wrapper of the same function (this process only);
it is reported as a multiple of one naive step.

    .venv/bin/python benchmarks/method_overhead.py            # the measurement
    .venv/bin/python benchmarks/method_overhead.py --quick    # a check that the script works
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    add_threads_option,
    apply_threads,
    header,
    median,
    print_table,
    quiet,
    result_line,
    timed_into,
    timed_trainer_run,
)

import lifelong.methods.ewc as ewc_module  # noqa: E402
from lifelong.config import RunConfig  # noqa: E402

TASKS, N_DIGITS, MAX_LENGTH = ["add", "reverse"], 2, 16
# the methods compared with naive; add an entry (e.g. {"name": "olora"}) to measure another one
METHODS: dict[str, dict] = {
    "ewc": {"name": "ewc"},
    "lwf": {"name": "lwf"},
    "l2": {"name": "l2"},
    "feature_reg": {"name": "feature_reg"},
    "olora": {"name": "olora", "train_base_on_first_task": True},
}

FISHER = {"seconds": 0.0, "calls": 0}  # time in diagonal_fisher during the current run


def config(method, steps: int, batch_size: int, seed: int, n_train: int, output_dir: str) -> RunConfig:
    return RunConfig.model_validate(
        {
            "name": "method-overhead",
            "seed": seed,
            "output_dir": output_dir,
            "stream": {
                "builtin": "toy",
                "options": {"tasks": TASKS, "n_digits": N_DIGITS, "n_train": n_train},
            },
            "model": {"preset": "tiny", "max_length": MAX_LENGTH},
            "train": {
                "steps_per_task": steps,
                "batch_size": batch_size,
                "eval_every": None,
                "eval_examples": 1,
                "checkpoint_every": None,
            },
            "methods": [method],
            "progress": False,
        }
    )


def run(method, steps: int, batch_size: int, seed: int, n_train: int) -> dict:
    FISHER["seconds"], FISHER["calls"] = 0.0, 0
    with tempfile.TemporaryDirectory(prefix="bench-method-overhead-") as tmp:
        timing = timed_trainer_run(config(method, steps, batch_size, seed, n_train, tmp))
    fisher_per_call = FISHER["seconds"] / max(FISHER["calls"], 1)
    return {"step": timing.tasks[1].train_seconds / steps, "fisher": fisher_per_call}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: check that the script works")
    parser.add_argument("--steps", type=int, default=None, help="steps per task (default 100)")
    parser.add_argument("--batch-size", type=int, default=None, help="task rows per step (default 128)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs of each method (default 5)")
    parser.add_argument("--seed", type=int, default=0)
    add_threads_option(parser)
    args = parser.parse_args()
    apply_threads(args)
    steps = args.steps or (5 if args.quick else 100)
    batch_size = args.batch_size or (16 if args.quick else 128)
    repeats = args.repeats or (2 if args.quick else 5)
    n_train = 2000 if args.quick else 20000

    quiet()
    ewc_module.diagonal_fisher = timed_into(ewc_module.diagonal_fisher, FISHER, "seconds", "calls")
    header(
        f"method_overhead: toy {'+'.join(TASKS)}, {steps} steps per task, batch {batch_size}, "
        f"{repeats} repeats, methods {list(METHODS)} against naive"
    )
    methods = {"naive": {"name": "naive"}, **METHODS}
    names = list(methods)
    for name in names if not args.quick else []:  # one untimed warm-up of each
        run(methods[name], steps, batch_size, args.seed, n_train)

    steps_ms: dict[str, list[float]] = {name: [] for name in names}
    ratios: dict[str, list[float]] = {name: [] for name in METHODS}
    fisher_ratios: list[float] = []
    for r in range(repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        out = {name: run(methods[name], steps, batch_size, args.seed, n_train) for name in order}
        for name in names:
            steps_ms[name].append(out[name]["step"] * 1e3)
        for name in METHODS:
            ratios[name].append(out[name]["step"] / out["naive"]["step"])
        if "ewc" in out:
            fisher_ratios.append(out["ewc"]["fisher"] / out["naive"]["step"])

    print()
    rows = [[name, median(steps_ms[name]), median(ratios[name]) if name in ratios else 1.0] for name in names]
    print_table(["method", "ms/step (median)", "step time / naive (median)"], rows)
    for name in METHODS:
        result_line(
            f"method_overhead_{name}", ratio_median=median(ratios[name]), steps=steps, repeats=repeats
        )
    if fisher_ratios:
        cfg = ewc_module.EWCConfig()
        print(
            f"\nEWC Fisher pass ({cfg.fisher_rows} rows, micro-batches of {cfg.fisher_batch_size}): "
            f"{median(fisher_ratios):.1f} naive steps (median)"
        )
        result_line("method_overhead_ewc_fisher", naive_steps_median=median(fisher_ratios), repeats=repeats)


if __name__ == "__main__":
    main()
