"""The training loop's overhead: lifelong's Trainer against a hand-written PyTorch loop.

Both train the same tiny-preset Llama (identical initialisation: same seed), on the same batches (the
toy stream's "add" task, rows from `BatchSchedule`, cut by `EncodedSet.batch`), for the same steps,
with fused AdamW (same lr, betas, weight decay), gradient clipping at 1.0 and the masked next-token
cross-entropy. The two alternate in one process (the order flips every repeat) after one untimed
warm-up run of each.

Timed for lifelong: the task's `Trainer.train_task` call minus its evaluation and checkpoint (the
"loop" time: steps, method hooks, logging, optimizer creation), and, separately, the `train_seconds`
the run records (its per-step timers, which leave out the per-step log write). Timed for the
hand-written loop: optimizer creation and the steps, with one `loss.item()` per step (a loop that
logs its loss; lifelong reads the loss too, to check it is finite).

    .venv/bin/python benchmarks/loop_overhead.py            # the measurement
    .venv/bin/python benchmarks/loop_overhead.py --quick    # a check that the script works
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

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
    timed_trainer_run,
)

from lifelong.config import RunConfig  # noqa: E402
from lifelong.data.batching import BatchSchedule, encode_stream  # noqa: E402
from lifelong.data.toy import toy_stream  # noqa: E402
from lifelong.models import build_preset, build_tokenizer  # noqa: E402
from lifelong.seeding import seed_everything  # noqa: E402

TASK, N_DIGITS, MAX_LENGTH = "add", 2, 16
LR, BETAS, WEIGHT_DECAY, GRAD_CLIP = 1e-3, (0.9, 0.999), 0.02, 1.0


def stream_options(n_train: int) -> dict:
    return {"tasks": [TASK], "n_digits": N_DIGITS, "n_train": n_train}


def lifelong_config(
    steps: int, batch_size: int, seed: int, n_train: int, output_dir: str, compile_: bool = False
) -> RunConfig:
    return RunConfig.model_validate(
        {
            "name": "loop-overhead",
            "seed": seed,
            "output_dir": output_dir,
            "stream": {"builtin": "toy", "options": stream_options(n_train)},
            "model": {"preset": "tiny", "max_length": MAX_LENGTH},
            "train": {
                "steps_per_task": steps,
                "batch_size": batch_size,
                "lr": LR,
                "betas": list(BETAS),
                "weight_decay": WEIGHT_DECAY,
                "grad_clip": GRAD_CLIP,
                "schedule": "constant",
                "warmup_steps": 0,
                "loss_on": "sequence",
                "eval_every": None,
                "eval_examples": 1,
                "checkpoint_every": None,
                "compile": compile_,
            },
            "methods": ["naive"],
            "progress": False,
        }
    )


def run_lifelong(steps: int, batch_size: int, seed: int, n_train: int, compile_: bool = False) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-loop-") as tmp:
        cfg = lifelong_config(steps, batch_size, seed, n_train, tmp, compile_)
        timing = timed_trainer_run(cfg)
        (task,) = timing.tasks
        lines = (Path(timing.run_path) / "train_log.jsonl").read_text().splitlines()
        log = [json.loads(line) for line in lines]
    return {"loop": task.loop, "train_seconds": task.train_seconds, "losses": [r["loss"] for r in log]}


class HandWritten:
    """The same model, data and optimizer, in the shortest loop that does the same work."""

    def __init__(self, seed: int, n_train: int):
        stream = toy_stream(seed=seed, **stream_options(n_train))
        tokenizer = build_tokenizer(stream.vocabulary, [t.token for t in stream.tasks])
        self.train = encode_stream(stream, tokenizer, MAX_LENGTH).tasks[0].train
        self.vocab_size = len(tokenizer)
        self.seed = seed

    def model(self) -> torch.nn.Module:
        seed_everything(self.seed)  # as Trainer does before building the model: same initial weights
        return build_preset("tiny", self.vocab_size, MAX_LENGTH).train()

    def run(self, steps: int, batch_size: int) -> dict:
        model = self.model()
        schedule = BatchSchedule(len(self.train), batch_size, self.seed, 0)
        losses, tokens = [], 0
        start = time.perf_counter()
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=LR, betas=BETAS, weight_decay=WEIGHT_DECAY, fused=True
        )
        for step in range(steps):
            batch = self.train.batch(schedule.rows(step), "sequence")
            ids = batch.input_ids
            logits = model(input_ids=ids, attention_mask=batch.attention_mask).logits
            mask = batch.loss_mask[:, 1:].float()
            ce = F.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="none"
            ).view_as(mask)
            loss = (ce * mask).sum() / mask.sum()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
        elapsed = time.perf_counter() - start
        for step in range(steps):  # outside the timing: the tokens the steps processed
            tokens += int(self.train.lengths[schedule.rows(step)].sum())
        return {"loop": elapsed, "losses": losses, "tokens": tokens, "model": model}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: check that the script works")
    parser.add_argument("--steps", type=int, default=None, help="training steps per run (default 100)")
    parser.add_argument("--batch-size", type=int, default=None, help="rows per step (default 128)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs of each loop (default 5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compile", action="store_true", help="lifelong with train.compile: true")
    add_threads_option(parser)
    args = parser.parse_args()
    apply_threads(args)
    steps = args.steps or (10 if args.quick else 100)
    batch_size = args.batch_size or (32 if args.quick else 128)
    repeats = args.repeats or (2 if args.quick else 5)
    peak_n, peak_repeats = (512, 5) if args.quick else (1024, 10)
    n_train = 2000 if args.quick else 20000  # toy examples (20000: the toy stream's default)

    quiet()
    hand = HandWritten(args.seed, n_train)
    header(
        f"loop_overhead: {steps} steps, batch {batch_size}, {repeats} repeats, tiny preset, toy {TASK} "
        f"({len(hand.train)} train rows), lifelong compile {args.compile}"
    )

    # one untimed warm-up of each (allocator, thread pool, lazy imports)
    run_lifelong(steps, batch_size, args.seed, n_train, args.compile)
    warm = hand.run(steps, batch_size)
    tokens, flops_model = warm["tokens"], warm["model"]

    rows, ratios, ratios_rec, peaks = [], [], [], []
    life_loops, life_recs, hand_loops, loss_diffs = [], [], [], []
    for r in range(repeats):
        peaks.append(matmul_peak_gflops(peak_n, repeats=peak_repeats))
        order = ("lifelong", "hand") if r % 2 == 0 else ("hand", "lifelong")
        out = {}
        for which in order:
            if which == "lifelong":
                out[which] = run_lifelong(steps, batch_size, args.seed, n_train, args.compile)
            else:
                out[which] = hand.run(steps, batch_size)
        life, hw = out["lifelong"], out["hand"]
        diff = max(abs(a - b) for a, b in zip(life["losses"], hw["losses"], strict=True))
        loss_diffs.append(diff)
        life_loops.append(life["loop"])
        life_recs.append(life["train_seconds"])
        hand_loops.append(hw["loop"])
        ratios.append(life["loop"] / hw["loop"])
        ratios_rec.append(life["train_seconds"] / hw["loop"])
        rows.append(
            [
                r + 1,
                "/".join(order),
                life["loop"],
                life["train_seconds"],
                hw["loop"],
                ratios[-1],
                ratios_rec[-1],
                f"{diff:.1e}",
            ]
        )
    peaks.append(matmul_peak_gflops(peak_n, repeats=peak_repeats))

    print()
    print_table(
        [
            "repeat",
            "order",
            "lifelong loop s",
            "lifelong train_seconds",
            "hand s",
            "ratio loop",
            "ratio train_seconds",
            "max |dloss|",
        ],
        rows,
    )

    seq_len = tokens / (steps * batch_size)
    flops_per_token = model_flops_per_token(flops_model, seq_len)
    peak = median(peaks)
    life_t, rec_t, hand_t = median(life_loops), median(life_recs), median(hand_loops)
    life_tps, hand_tps = tokens / life_t, tokens / hand_t
    life_gflops, hand_gflops = life_tps * flops_per_token / 1e9, hand_tps * flops_per_token / 1e9
    print()
    print_table(
        ["loop", "median s", "tokens/s", "model GFLOP/s", "of fp32 matmul peak"],
        [
            ["lifelong (loop)", life_t, f"{life_tps:,.0f}", life_gflops, f"{life_gflops / peak:.2%}"],
            [
                "lifelong (train_seconds)",
                rec_t,
                f"{tokens / rec_t:,.0f}",
                tokens / rec_t * flops_per_token / 1e9,
                f"{tokens / rec_t * flops_per_token / 1e9 / peak:.2%}",
            ],
            ["hand-written", hand_t, f"{hand_tps:,.0f}", hand_gflops, f"{hand_gflops / peak:.2%}"],
        ],
    )
    print(
        f"\n{tokens} tokens per run ({seq_len:.1f} per row), {flops_per_token / 1e6:.3f} MFLOP per token "
        f"(6N + 12 L d T + 6 d V), fp32 matmul peak {peak:.1f} GFLOP/s (n={peak_n}, median of "
        f"{len(peaks)} samples: {', '.join(f'{p:.1f}' for p in peaks)})"
    )
    print("max |dloss|: largest difference of the per-step losses of the two loops (same work => ~0)\n")
    result_line(
        "loop_overhead",
        ratio_median=median(ratios),
        ratio_train_seconds_median=median(ratios_rec),
        target=1.05,
        steps=steps,
        batch_size=batch_size,
        repeats=repeats,
    )
    result_line(
        "loop_overhead_throughput",
        lifelong_tokens_per_s=life_tps,
        hand_tokens_per_s=hand_tps,
        lifelong_gflops=life_gflops,
        hand_gflops=hand_gflops,
        peak_gflops=peak,
        lifelong_peak_fraction=life_gflops / peak,
        hand_peak_fraction=hand_gflops / peak,
    )
    result_line("loop_overhead_check", max_abs_loss_diff=max(loss_diffs))


if __name__ == "__main__":
    main()
