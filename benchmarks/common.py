"""Shared pieces of the benchmark scripts: a matmul peak, medians, tables, model FLOPs, instrumented runs.

Benchmarks are not tests: they print figures measured side by side in one process. The machine may be
noisy, so every figure is a median over repeats and the headline numbers are ratios, not absolute times.
Run a script with `.venv/bin/python benchmarks/<name>.py` (`--quick` only checks that it works).
"""

from __future__ import annotations

import logging
import os
import statistics
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch


def quiet() -> None:
    """Silence library warnings and info logs so the benchmark output stays readable."""
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for name in ("transformers", "accelerate", "datasets"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
    except ImportError:
        pass


def median(values: Iterable[float]) -> float:
    values = list(values)
    return statistics.median(values) if values else float("nan")


def matmul_peak_gflops(n: int = 1024, repeats: int = 20, warmup: int = 3) -> float:
    """Median fp32 GFLOP/s of an (n x n) @ (n x n) matmul (2 n^3 FLOPs) on the CPU, with torch's
    current thread count: the ceiling that achieved model FLOP/s is compared with."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen)
    b = torch.randn(n, n, generator=gen)
    out = torch.empty(n, n)
    for _ in range(warmup):
        torch.mm(a, b, out=out)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        times.append(time.perf_counter() - start)
    return 2 * n**3 / median(times) / 1e9


def non_embedding_params(model: torch.nn.Module) -> int:
    """Parameters outside the input embedding (and outside an untied output head)."""
    excluded = {id(model.get_input_embeddings().weight)}
    head = model.get_output_embeddings()
    if head is not None:
        excluded.add(id(head.weight))
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) in excluded or id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
    return total


def model_flops_per_token(model: torch.nn.Module, seq_len: float, lm_head: bool = True) -> float:
    """Training FLOPs (forward + backward) per token of a Llama-style model, Kaplan et al. style:

        6 * N  +  12 * n_layers * d_model * seq_len  [+ 6 * d_model * vocab if lm_head]

    N is the non-embedding parameter count (every linear layer of the blocks; the norms are counted
    too, which is negligible): each such weight costs 2 FLOPs per token forward and 4 backward. The
    second term is attention's QK^T and AV products (2 * 2 * seq_len * d_model per layer forward,
    times 3 for forward + backward), counted over the full context without halving for causality.
    The output projection (d_model x vocab) is a matmul done on every token even when its weight is
    tied to the embedding, so it is added unless `lm_head=False`. `seq_len` is the length of the
    rows (their mean when they differ). Elementwise work (softmax, norms, activations, the loss and
    the optimizer) is not counted: this is the conventional "model FLOPs", not hardware FLOPs.
    """
    cfg = model.config
    d, layers = cfg.hidden_size, cfg.num_hidden_layers
    flops = 6 * non_embedding_params(model) + 12 * layers * d * seq_len
    if lm_head:
        flops += 6 * d * cfg.vocab_size
    return float(flops)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], floatfmt: str = ".3f") -> None:
    """A small aligned text table: the first column left-aligned, the others right-aligned; floats are
    formatted with `floatfmt`."""

    def cell(value: Any) -> str:
        return format(value, floatfmt) if isinstance(value, float) else str(value)

    cells = [[cell(v) for v in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        pairs = enumerate(zip(values, widths, strict=True))
        parts = [v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in pairs]
        return "  ".join(parts).rstrip()

    print(line([str(h) for h in headers]))
    print(line(["-" * w for w in widths]))
    for row in cells:
        print(line(row))


def result_line(name: str, **figures: Any) -> None:
    """`RESULT <name> key=value ...`: one line per figure set, easy to copy and grep."""

    def fmt(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}"
        return str(value)

    print(f"RESULT {name} " + " ".join(f"{k}={fmt(v)}" for k, v in figures.items()), flush=True)


def add_threads_option(parser) -> None:
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's own; 1 with --quick)"
    )


def apply_threads(args) -> None:
    """--quick uses one thread: fast and steady on a busy machine."""
    threads = args.threads or (1 if args.quick else None)
    if threads:
        torch.set_num_threads(threads)


def header(title: str) -> None:
    torch_threads = torch.get_num_threads()
    print(f"== {title} (torch {torch.__version__}, {torch_threads} threads, {os.cpu_count()} cpus)")


@dataclass
class TaskTiming:
    """One task of an instrumented run (seconds)."""

    wall: float = 0.0  # the whole train_task call
    train_seconds: float = 0.0  # what the run records for its steps (Trainer.progress.train_seconds)
    eval: float = 0.0  # evaluations inside train_task (mid-task and the task's end)
    checkpoint: float = 0.0  # checkpoints inside train_task

    @property
    def loop(self) -> float:
        """The task's loop without its evaluations and checkpoints: steps, logging, method hooks."""
        return self.wall - self.eval - self.checkpoint


@dataclass
class RunTiming:
    tasks: list[TaskTiming] = field(default_factory=list)
    setup: float = 0.0  # Trainer construction (stream, tokenizer, model, method setup)
    total: float = 0.0  # setup + run()
    progress: Any = None  # the run's final Progress
    run_path: Any = None


def timed_trainer_run(cfg, wrap: Callable[[Any], None] | None = None) -> RunTiming:
    """Run `cfg` through `lifelong.train.Trainer` (the loop `lifelong.run` uses), timing each task.

    The Trainer instance's `train_task`, `evaluate` and `checkpoint` are wrapped (instance attributes,
    this process only; the library is unchanged) so that a task's loop time excludes evaluation and
    checkpointing. `wrap(trainer)` may add more instrumentation before the run starts.
    """
    from lifelong.rundir import RunDir
    from lifelong.train import Trainer

    timing = RunTiming()
    start = time.perf_counter()
    trainer = Trainer(cfg, RunDir.create(cfg), show_progress=False)
    timing.setup = time.perf_counter() - start
    current: list[TaskTiming] = []

    def timed(name: str, original: Callable) -> Callable:
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                if current:
                    setattr(current[-1], name, getattr(current[-1], name) + time.perf_counter() - t0)

        return wrapper

    train_task = trainer.train_task

    def timed_train_task(*args, **kwargs):
        task = TaskTiming()
        current.append(task)
        before = trainer.progress.train_seconds
        t0 = time.perf_counter()
        try:
            return train_task(*args, **kwargs)
        finally:
            task.wall = time.perf_counter() - t0
            task.train_seconds = trainer.progress.train_seconds - before
            timing.tasks.append(task)
            current.clear()

    trainer.evaluate = timed("eval", trainer.evaluate)
    trainer.checkpoint = timed("checkpoint", trainer.checkpoint)
    trainer.train_task = timed_train_task
    if wrap is not None:
        wrap(trainer)
    result = trainer.run()
    timing.total = time.perf_counter() - start
    timing.progress = result.progress
    timing.run_path = result.path
    return timing


# seconds spent sampling self-replay rows in the current run (`reset_sampling` before each run)
SAMPLING = {"generate": 0.0, "sample_chunk": 0.0, "chunks": 0}


def reset_sampling() -> None:
    for key in SAMPLING:
        SAMPLING[key] = 0


def timed_into(original: Callable, totals: dict, key: str, count: str | None = None) -> Callable:
    """`original`, adding the seconds of each call to `totals[key]` (and one to `totals[count]`)."""

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            totals[key] += time.perf_counter() - start
            if count is not None:
                totals[count] += 1

    return timed


def time_generate() -> None:
    """Time `lifelong.sampling.generate` as self_replay calls it (its module attribute, replaced in this
    process only) into SAMPLING["generate"]."""
    import lifelong.methods.self_replay as self_replay_module

    self_replay_module.generate = timed_into(self_replay_module.generate, SAMPLING, "generate")


def wrap_sample_chunk(trainer) -> None:
    """A `timed_trainer_run` wrap: times each self_replay method's `sample_chunk` (prompt choice,
    generation and packing of a chunk) into SAMPLING["sample_chunk"] and counts the chunks."""
    from lifelong.methods.self_replay import SelfReplay

    for method in trainer.methods:
        if isinstance(method, SelfReplay):
            method.sample_chunk = timed_into(method.sample_chunk, SAMPLING, "sample_chunk", "chunks")
