"""Where a training step's time goes: torch.profiler over `Trainer.step` on the toy stream.

A Trainer is built for a one-task toy config (tiny preset, batch 128, rows of the 2-digit `add` task),
then `--steps` steps are run under `torch.profiler` after a few warm-up steps. The table lists the
operators with the most self CPU time; the `RESULT` lines give the top entries' shares and the
step time with and without the profiler (so its own overhead is visible).

    .venv/bin/python benchmarks/profile_step.py                        # tiny preset (8 heads of 16)
    .venv/bin/python benchmarks/profile_step.py --heads 32             # the paper's toy (32 heads of 4)
    .venv/bin/python benchmarks/profile_step.py --attn eager --compile # variants
    .venv/bin/python benchmarks/profile_step.py --quick                # a check that the script works
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import add_threads_option, apply_threads, header, median, quiet, result_line  # noqa: E402

from lifelong.config import RunConfig  # noqa: E402
from lifelong.data.batching import BatchSchedule  # noqa: E402
from lifelong.rundir import RunDir  # noqa: E402
from lifelong.train import Trainer  # noqa: E402


def build_trainer(args, output_dir: str) -> Trainer:
    overrides = {"num_heads": args.heads} if args.heads else {}
    model = {"preset": "tiny", "max_length": 16, "overrides": overrides}
    cfg = RunConfig.model_validate(
        {
            "name": "profile-step",
            "output_dir": output_dir,
            "stream": {"builtin": "toy", "options": {"tasks": ["add"], "n_digits": 2, "n_train": 20000}},
            "model": model,
            "train": {
                "steps_per_task": 1000,
                "batch_size": args.batch_size,
                "eval_examples": 1,
                **({"compile": True} if args.compile else {}),
            },
            "methods": ["naive"],
            "progress": False,
        }
    )
    trainer = Trainer(cfg, RunDir.create(cfg), show_progress=False)
    if args.attn:
        trainer.raw.set_attn_implementation(args.attn)
    trainer.start_task(0, trainer.data.tasks[0].train)
    return trainer


def step_seconds(trainer: Trainer, steps: range) -> list[float]:
    examples = trainer.data.tasks[0].train
    schedule = BatchSchedule(len(examples), trainer.cfg.train.batch_size, 0, 0)
    times = []
    for step in steps:
        start = time.perf_counter()
        trainer.step(examples.batch(schedule.rows(step)), [None])
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few steps: check that the script works")
    parser.add_argument("--steps", type=int, default=None, help="profiled steps (default 30)")
    parser.add_argument("--batch-size", type=int, default=None, help="rows per step (default 128)")
    parser.add_argument("--heads", type=int, default=None, help="attention heads (tiny: 8; paper toy: 32)")
    parser.add_argument("--attn", choices=["sdpa", "eager"], default=None, help="attn_implementation")
    parser.add_argument("--compile", action="store_true", help="train.compile: true")
    parser.add_argument("--top", type=int, default=15, help="operators listed")
    add_threads_option(parser)
    args = parser.parse_args()
    apply_threads(args)
    steps = args.steps or (3 if args.quick else 30)
    args.batch_size = args.batch_size or (16 if args.quick else 128)
    quiet()
    header(
        f"profile_step: {steps} steps, batch {args.batch_size}, heads {args.heads or 8}, attn "
        f"{args.attn or 'default'}, compile {args.compile}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        trainer = build_trainer(args, tmp)
        step_seconds(trainer, range(0, 5))  # warm-up (and compilation)
        plain = step_seconds(trainer, range(5, 5 + steps))
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            profiled = step_seconds(trainer, range(5 + steps, 5 + 2 * steps))
    events = prof.key_averages()
    print(events.table(sort_by="self_cpu_time_total", row_limit=args.top))
    total = sum(e.self_cpu_time_total for e in events)
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:5]
    result_line(
        "profile_step",
        ms_per_step=median(plain) * 1e3,
        profiled_ms_per_step=median(profiled) * 1e3,
        heads=args.heads or 8,
        attn=args.attn or "default",
        compile=args.compile,
    )
    result_line("profile_step_top", **{e.key.replace(" ", "_"): e.self_cpu_time_total / total for e in top})


if __name__ == "__main__":
    main()
