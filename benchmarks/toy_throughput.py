"""Steps per second and fraction of the matmul peak of the paper-sized toy model, naive vs self-replay.

The model: the tiny preset with 32 heads of width 4 (2 layers, width 128, MLP 512), batch 128, the toy
stream's 2-digit tasks (rows of 11 to 13 tokens; `add` then `reverse`). Runs: `naive`, and
`self_replay` at replay_fraction 1.0 (loss ntp, coef 10) and 0.25 (ntp, coef 10), each with
`train.compile` off and on. The second task is timed (replay is active there): steps / its recorded
`train_seconds` (sampling included), and achieved model FLOP/s = the tokens the steps trained (task
rows + replay rows, counted from the batches) x model FLOPs per token / train_seconds, over the fp32
matmul peak measured in the same run. The runs alternate (order rotated every repeat) after one
untimed warm-up of each (which also compiles, so compilation is not in the timed figures: it is a
fixed cost per process, seen in the default job's wall time).

    .venv/bin/python benchmarks/toy_throughput.py              # the measurement
    .venv/bin/python benchmarks/toy_throughput.py --no-compile # only the eager runs
    .venv/bin/python benchmarks/toy_throughput.py --quick      # a check that the script works
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
    matmul_peak_gflops,
    median,
    model_flops_per_token,
    print_table,
    quiet,
    reset_sampling,
    result_line,
    time_generate,
    timed_trainer_run,
    wrap_sample_chunk,
)

from lifelong.config import RunConfig  # noqa: E402

TASKS, N_DIGITS, MAX_LENGTH, HEADS = ["add", "reverse"], 2, 16, 32
METHODS = {
    "naive": "naive",
    "self_replay_1.0": {"name": "self_replay", "replay_fraction": 1.0, "loss": "ntp", "coef": 10.0},
    "self_replay_0.25": {"name": "self_replay", "replay_fraction": 0.25, "loss": "ntp", "coef": 10.0},
}


def config(method, compile_: bool, steps: int, batch_size: int, n_train: int, out: str) -> RunConfig:
    return RunConfig.model_validate(
        {
            "name": "toy-throughput",
            "output_dir": out,
            "stream": {
                "builtin": "toy",
                "options": {"tasks": TASKS, "n_digits": N_DIGITS, "n_train": n_train},
            },
            "model": {"preset": "tiny", "max_length": MAX_LENGTH, "overrides": {"num_heads": HEADS}},
            "train": {
                "steps_per_task": steps,
                "batch_size": batch_size,
                "eval_every": None,
                "eval_examples": 1,
                "checkpoint_every": None,
                "compile": compile_,
            },
            "methods": [method],
            "progress": False,
        }
    )


def count_tokens(counter: dict):
    """A `timed_trainer_run` wrap: adds each step's trained tokens (task + replay rows) to `counter`."""

    def wrap(trainer) -> None:
        wrap_sample_chunk(trainer)
        log_step = trainer.log_step
        counter["trainer"] = trainer

        def counted(t, step, terms, batch, extras, *rest):
            tokens = int(batch.attention_mask.sum()) + sum(
                int(e.attention_mask.sum()) for e in extras if e is not None
            )
            counter[t] = counter.get(t, 0) + tokens
            return log_step(t, step, terms, batch, extras, *rest)

        trainer.log_step = counted

    return wrap


def run(name: str, compile_: bool, steps: int, batch_size: int, n_train: int) -> dict:
    counter: dict = {}
    reset_sampling()
    with tempfile.TemporaryDirectory(prefix="bench-toy-") as tmp:
        cfg = config(METHODS[name], compile_, steps, batch_size, n_train, tmp)
        timing = timed_trainer_run(cfg, wrap=count_tokens(counter))
    second = timing.tasks[1]
    flops = model_flops_per_token(counter["trainer"].raw, seq_len=12.0)
    return {
        "seconds": second.train_seconds,
        "tokens": counter[1],
        "flops_per_token": flops,
        "sampling": SAMPLING["sample_chunk"],  # all of it in the second task: the first has no replay
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: check that the script works")
    parser.add_argument("--steps", type=int, default=None, help="steps per task (default 100)")
    parser.add_argument("--batch-size", type=int, default=None, help="task rows per step (default 128)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs of each (default 3)")
    parser.add_argument("--no-compile", action="store_true", help="only train.compile: false")
    add_threads_option(parser)
    args = parser.parse_args()
    apply_threads(args)
    steps = args.steps or (10 if args.quick else 100)
    batch_size = args.batch_size or (16 if args.quick else 128)
    repeats = args.repeats or (1 if args.quick else 3)
    n_train = 2000 if args.quick else 20000
    compiles = [False] if args.no_compile or args.quick else [False, True]
    quiet()
    time_generate()
    header(
        f"toy_throughput: tiny preset with {HEADS} heads, toy {'+'.join(TASKS)}, {steps} steps per task, "
        f"batch {batch_size}, {repeats} repeats"
    )
    runs = [(name, c) for c in compiles for name in METHODS]
    for name, c in runs:  # untimed warm-up (and compilation)
        run(name, c, steps, batch_size, n_train)
    seconds: dict = {r: [] for r in runs}
    gflops: dict = {r: [] for r in runs}
    tokens: dict = {r: [] for r in runs}
    sampling: dict = {r: [] for r in runs}
    peaks = []
    for rep in range(repeats):
        peaks.append(matmul_peak_gflops(512 if args.quick else 1024, repeats=5 if args.quick else 10))
        shift = rep % len(runs)
        for key in runs[shift:] + runs[:shift]:
            out = run(*key, steps, batch_size, n_train)
            seconds[key].append(out["seconds"])
            tokens[key].append(out["tokens"])
            sampling[key].append(out["sampling"] / out["seconds"])
            gflops[key].append(out["tokens"] * out["flops_per_token"] / out["seconds"] / 1e9)
    peak = median(peaks)
    rows = []
    for name, c in runs:
        step_s = median(seconds[(name, c)]) / steps
        ratio = median(s / n for s, n in zip(seconds[(name, c)], seconds[("naive", c)], strict=True))
        token_ratio = median(tokens[(name, c)]) / median(tokens[("naive", c)])
        share = median(sampling[(name, c)])
        fraction = median(gflops[(name, c)]) / peak
        rows.append([name, str(c), step_s * 1e3, 1 / step_s, ratio, token_ratio, share, fraction])
        result_line(
            "toy_throughput",
            method=name,
            compile=c,
            ms_per_step=step_s * 1e3,
            steps_per_s=1 / step_s,
            ratio_to_naive=ratio,
            tokens_to_naive=token_ratio,
            sampling_share=share,
            gflops=median(gflops[(name, c)]),
            peak_fraction=median(gflops[(name, c)]) / peak,
        )
    print()
    print_table(
        ["method", "compile", "ms/step", "steps/s", "x naive", "tokens x naive", "sampling share", "of peak"],
        rows,
    )
    print(f"\nfp32 matmul peak {peak:.1f} GFLOP/s (median of {len(peaks)}); second task, {steps} steps")
    print(
        "tokens x naive: the tokens trained (task + replay rows) over naive's; sampling share: time in\n"
        "self_replay's sample_chunk (generation and packing) over the task's train_seconds\n"
    )
    for c in compiles:
        speedup = median(seconds[("naive", False)]) / median(seconds[("naive", c)])
        result_line("toy_throughput_compile", compile=c, naive_speedup_vs_eager=speedup, peak_gflops=peak)


if __name__ == "__main__":
    main()
