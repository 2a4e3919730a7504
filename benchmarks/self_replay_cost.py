"""The step-time cost of self-replay over naive fine-tuning, on a two-task toy stream.

Two runs of the same config but for the method: `naive`, and `self_replay` (replay_fraction 0.25,
NTP loss, samples drawn by the method itself: sampling is part of the measured steps). The second
task is timed, when replay is active: its `Trainer.train_task` call minus evaluation and checkpoint
("loop": includes the frozen copy made at the task's start and the per-step log writes), and the
`train_seconds` the run records for it (the per-step timers, which include `replay_batch`, hence the
sampling). The runs alternate in one process (order flipped every repeat) after one untimed warm-up
of each.

The sampling share is measured in this process only, without touching the library: the instance's
`sample_chunk` (prompt choice, generation and packing of a chunk of samples) is wrapped, and
`lifelong.methods.self_replay.generate` (the module attribute the method calls) is replaced by a timed
wrapper of the same function.

    .venv/bin/python benchmarks/self_replay_cost.py            # the measurement
    .venv/bin/python benchmarks/self_replay_cost.py --quick    # a check that the script works
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    SAMPLING,
    add_threads_option,
    apply_threads,
    header,
    median,
    print_table,
    quiet,
    reset_sampling,
    result_line,
    time_generate,
    timed_trainer_run,
    wrap_sample_chunk,
)

import lifelong.methods.self_replay as self_replay_module  # noqa: E402
from lifelong.config import RunConfig  # noqa: E402

TASKS, N_DIGITS, MAX_LENGTH = ["add", "reverse"], 2, 16
REPLAY = {"name": "self_replay", "replay_fraction": 0.25, "loss": "ntp"}


def config(method, steps: int, batch_size: int, seed: int, n_train: int, output_dir: str) -> RunConfig:
    return RunConfig.model_validate(
        {
            "name": "self-replay-cost",
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
    reset_sampling()
    with tempfile.TemporaryDirectory(prefix="bench-self-replay-") as tmp:
        cfg = config(method, steps, batch_size, seed, n_train, tmp)
        timing = timed_trainer_run(cfg, wrap=wrap_sample_chunk)
    second = timing.tasks[1]
    return {"loop": second.loop, "train_seconds": second.train_seconds, **SAMPLING}


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
    steps = args.steps or (10 if args.quick else 100)
    batch_size = args.batch_size or (32 if args.quick else 128)
    repeats = args.repeats or (2 if args.quick else 5)
    n_train = 2000 if args.quick else 20000

    quiet()
    time_generate()
    header(
        f"self_replay_cost: toy {'+'.join(TASKS)}, {steps} steps per task, batch {batch_size}, "
        f"{repeats} repeats, self_replay {REPLAY}"
    )
    methods = {"naive": "naive", "self_replay": REPLAY}
    refresh = self_replay_module.SelfReplayConfig(**REPLAY).refresh_every
    if steps % refresh:
        print(
            f"note: {steps} steps is not a multiple of refresh_every={refresh}: the last chunk of samples "
            "is drawn in full but only partly used, so sampling weighs more than in a long task"
        )

    for name in methods:  # one untimed warm-up of each
        run(methods[name], steps, batch_size, args.seed, n_train)

    rows, ratios, ratios_rec, shares, gen_shares = [], [], [], [], []
    naive_loops, replay_loops, chunks = [], [], 0
    for r in range(repeats):
        order = ["naive", "self_replay"] if r % 2 == 0 else ["self_replay", "naive"]
        out = {name: run(methods[name], steps, batch_size, args.seed, n_train) for name in order}
        naive, replay = out["naive"], out["self_replay"]
        ratios.append(replay["loop"] / naive["loop"])
        ratios_rec.append(replay["train_seconds"] / naive["train_seconds"])
        shares.append(replay["sample_chunk"] / replay["train_seconds"])
        gen_shares.append(replay["generate"] / replay["train_seconds"])
        naive_loops.append(naive["loop"])
        replay_loops.append(replay["loop"])
        chunks = replay["chunks"]
        rows.append(
            [
                r + 1,
                "/".join(order),
                naive["loop"],
                replay["loop"],
                ratios[-1],
                ratios_rec[-1],
                replay["sample_chunk"],
                f"{shares[-1]:.1%}",
                f"{gen_shares[-1]:.1%}",
            ]
        )

    print()
    print_table(
        [
            "repeat",
            "order",
            "naive s",
            "self_replay s",
            "ratio loop",
            "ratio train_seconds",
            "sampling s",
            "sampling share",
            "generate share",
        ],
        rows,
    )
    naive_step, replay_step = median(naive_loops) / steps, median(replay_loops) / steps
    print(
        f"\nsecond task, {steps} steps: naive {naive_step * 1e3:.2f} ms/step, self_replay "
        f"{replay_step * 1e3:.2f} ms/step (medians); {chunks} sample chunks per run"
    )
    print(
        "sampling share: time in sample_chunk (generate + packing) / self_replay's train_seconds of "
        "the task;\ngenerate share: the same for lifelong.sampling.generate alone\n"
    )
    result_line(
        "self_replay_cost",
        ratio_median=median(ratios),
        ratio_train_seconds_median=median(ratios_rec),
        target=1.6,
        steps=steps,
        batch_size=batch_size,
        repeats=repeats,
    )
    result_line(
        "self_replay_cost_sampling",
        sampling_share_median=median(shares),
        generate_share_median=median(gen_shares),
        chunks_per_task=chunks,
        naive_ms_per_step=naive_step * 1e3,
        self_replay_ms_per_step=replay_step * 1e3,
    )


if __name__ == "__main__":
    main()
