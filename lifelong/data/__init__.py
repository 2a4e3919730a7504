"""Streams of tasks: built-in ones by name, or tasks declared in YAML from JSONL/CSV files, inline
examples or Hugging Face `datasets`."""

from __future__ import annotations

import inspect
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lifelong.data.loaders import load_examples
from lifelong.data.task import Example, Stream, Task
from lifelong.data.toy import toy_stream
from lifelong.errors import UserError
from lifelong.seeding import derive_seed

if TYPE_CHECKING:
    from lifelong.config import StreamConfig, TaskSpec


@dataclass(frozen=True)
class StreamInfo:
    """A built-in stream: its builder `make(seed=..., **options) -> Stream`, what `lifelong streams`
    says of it, and the model and training settings `lifelong run --stream NAME` starts from."""

    make: Callable[..., Stream]
    source: str  # where the data comes from
    task_format: str  # what one example looks like
    metric: str
    model: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    # Data that is not installed with the package (a hub download, a local copy): `lifelong streams`
    # then says this instead of building the stream, which could download gigabytes or wait on the hub.
    needs: str = ""


BUILTIN_STREAMS: dict[str, StreamInfo] = {}


def register_stream(name: str, info: StreamInfo) -> None:
    if name in BUILTIN_STREAMS:
        raise ValueError(f"stream {name!r} is registered twice")
    BUILTIN_STREAMS[name] = info


register_stream(
    "toy",
    StreamInfo(
        toy_stream,
        source="generated digits",
        task_format="[task] a <sep> b <eq> -> answer digits",
        metric="exact_match",
        model={"preset": "tiny", "max_length": 16},
        train={
            "steps_per_task": 500,
            "batch_size": 128,
            "lr": 3.0e-3,
            "warmup_steps": 50,
            "schedule": "cosine",
            "eval_every": 100,
            "eval_examples": 256,
            "checkpoint_every": 250,
        },
    ),
)


def builtin_streams() -> dict[str, StreamInfo]:
    """Every built-in stream: the toy stream and the scenarios of `lifelong.data.scenarios`."""
    import lifelong.data.scenarios  # noqa: F401  (registers them)

    return dict(BUILTIN_STREAMS)


def build_stream(cfg: StreamConfig, seed: int) -> Stream:
    if cfg.tasks is not None:
        return Stream(cfg.name or "custom", [build_task(spec, seed) for spec in cfg.tasks])
    streams = builtin_streams()
    if cfg.builtin not in streams:
        raise UserError(f"unknown stream {cfg.builtin!r} (known: {', '.join(streams)})")
    make = streams[cfg.builtin].make
    accepted = set(inspect.signature(make).parameters) - {"seed"}
    unknown = sorted(set(cfg.options) - accepted)
    if unknown:
        raise UserError(
            f"stream {cfg.builtin!r} has no option {unknown[0]!r} (options: {', '.join(sorted(accepted))})"
        )
    stream = make(seed=seed, **cfg.options)
    if cfg.name:
        stream.name = cfg.name
    return stream


def build_task(spec: TaskSpec, seed: int) -> Task:
    train = load_examples(spec.train, spec.kind, f"task {spec.name!r} train")
    if spec.eval is not None:
        eval_ = load_examples(spec.eval, spec.kind, f"task {spec.name!r} eval")
    else:
        train, eval_ = split_examples(train, spec.eval_fraction, derive_seed(seed, "split", spec.name))
    for split, rows in (("train", train), ("eval", eval_)):
        if not rows:
            raise UserError(f"task {spec.name!r} has no {split} examples")
    return Task(spec.name, spec.kind, train, eval_, spec.metric, spec.token)


def split_examples(
    examples: list[Example], fraction: float, seed: int
) -> tuple[list[Example], list[Example]]:
    """Deterministic held-out split: a seeded shuffle, then the first `fraction` is eval."""
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_eval = max(1, round(fraction * len(examples))) if len(examples) > 1 else 0
    eval_idx = set(order[:n_eval])
    train = [ex for i, ex in enumerate(examples) if i not in eval_idx]
    return train, [examples[i] for i in sorted(eval_idx)]


__all__ = [
    "BUILTIN_STREAMS",
    "Example",
    "Stream",
    "StreamInfo",
    "Task",
    "build_stream",
    "build_task",
    "builtin_streams",
    "register_stream",
    "toy_stream",
]
