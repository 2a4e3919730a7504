"""`lifelong pretrain`'s throughput: tokens/s of the built-in en-tiny recipe, next to the fp32 matmul
peak measured in the same process, and the share of that peak its model FLOPs reach.

The en-tiny config (or another built-in pretrain config, `--config`) is built as `lifelong pretrain`
builds it (tokenizer, packed rows, model, optimizer) in a temporary model cache, then trained for
`--steps` steps; the first `--warmup` steps are not timed. Repeated `--repeats` times (a fresh
pretrainer each time, the matmul peak measured before each), medians reported.

    .venv/bin/python benchmarks/pretrain_throughput.py            # the measurement
    .venv/bin/python benchmarks/pretrain_throughput.py --quick    # a check that the script works
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    add_threads_option,
    apply_threads,
    header,
    matmul_peak_gflops,
    median,
    model_flops_per_token,
    print_table,
    quiet,
    result_line,
)

from lifelong.pretrain import Pretrainer, PretrainInterrupted, load_pretrain_config  # noqa: E402


def measure(config: str, steps: int, warmup: int) -> dict[str, float]:
    """Tokens/s of steps warmup..steps of a fresh pretraining of `config`."""
    overrides = {"train.eval_every": None, "train.checkpoint_every": None}
    cfg = load_pretrain_config(config, overrides)
    with tempfile.TemporaryDirectory(prefix="bench-pretrain-") as cache:
        trainer = Pretrainer(cfg, cache=cache, show_progress=False)
        try:
            trainer.train(stop_after=warmup)
        except PretrainInterrupted:
            pass
        seconds_before, start = trainer.progress.train_seconds, time.perf_counter()
        try:
            trainer.train(stop_after=steps)
        except PretrainInterrupted:
            pass
        wall = time.perf_counter() - start
        timed = trainer.progress.train_seconds - seconds_before
        tokens = (steps - warmup) * trainer.tokens_per_step
        flops_per_token = model_flops_per_token(trainer.raw, cfg.model.max_length)
    return {
        "tokens_per_s": tokens / timed,
        "wall_tokens_per_s": tokens / wall,
        "gflops": tokens * flops_per_token / timed / 1e9,
        "params": trainer.params,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="en-tiny", help="a built-in pretrain config or a YAML file")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: check that the script works")
    parser.add_argument("--steps", type=int, default=None, help="steps per repeat (default 60)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed first steps (default 10)")
    parser.add_argument("--repeats", type=int, default=None, help="repeats (default 3)")
    add_threads_option(parser)
    args = parser.parse_args()
    apply_threads(args)
    steps = args.steps or (4 if args.quick else 60)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 10)
    repeats = args.repeats or (1 if args.quick else 3)
    quiet()
    header(f"pretrain_throughput: {args.config}, {steps} steps ({warmup} untimed), {repeats} repeats")
    peaks, runs = [], []
    for _ in range(repeats):
        peaks.append(matmul_peak_gflops())
        runs.append(measure(args.config, steps, warmup))
    tps = median(r["tokens_per_s"] for r in runs)
    gflops = median(r["gflops"] for r in runs)
    peak = median(peaks)
    print()
    print_table(
        [
            "params",
            "tokens/s (median)",
            "tokens/s incl. logging",
            "model GFLOP/s",
            "matmul peak GFLOP/s",
            "share",
        ],
        [[runs[0]["params"], tps, median(r["wall_tokens_per_s"] for r in runs), gflops, peak, gflops / peak]],
        floatfmt=".1f",
    )
    result_line(
        "pretrain_throughput", tokens_per_s=tps, model_gflops=gflops, peak_gflops=peak, share=gflops / peak
    )


if __name__ == "__main__":
    main()
