"""Streams of tasks: built-in ones by name, or tasks declared in YAML from JSONL/CSV files, inline
examples or Hugging Face `datasets`."""

from __future__ import annotations

import inspect

from lifelong.data.loaders import load_examples
from lifelong.data.registry import BUILTIN_STREAMS, StreamInfo, register_stream
from lifelong.data.spec import StreamConfig, TaskSpec
from lifelong.data.split import seeded_split
from lifelong.data.task import Example, Stream, Task
from lifelong.data.toy import toy_stream
from lifelong.errors import UserError

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
    try:
        stream = make(seed=seed, **cfg.options)
    except (TypeError, ValueError) as err:  # an option of the wrong type, e.g. n_digits: two
        raise UserError(f"stream {cfg.builtin!r}: bad options {cfg.options}: {err}") from None
    if not stream.tasks:
        raise UserError(f"stream {cfg.builtin!r} has no tasks (options: {cfg.options})")
    if cfg.name:
        stream.name = cfg.name
    return stream


def build_task(spec: TaskSpec, seed: int) -> Task:
    train = load_examples(spec.train, spec.kind, f"task {spec.name!r} train")
    if spec.eval is not None:
        eval_ = load_examples(spec.eval, spec.kind, f"task {spec.name!r} eval")
    else:
        train, eval_ = split_examples(train, spec.eval_fraction, seed, "split", spec.name)
    for split, rows in (("train", train), ("eval", eval_)):
        if not rows:
            raise UserError(f"task {spec.name!r} has no {split} examples")
    return Task(spec.name, spec.kind, train, eval_, spec.metric, spec.token, beta=spec.beta)


def split_examples(
    examples: list[Example], fraction: float, seed: int, *parts: object
) -> tuple[list[Example], list[Example]]:
    """A user file's held-out split: `fraction` of it (at least one example, none of a single one),
    seeded by (seed, *parts), file order kept on both sides."""
    n_eval = max(1, round(fraction * len(examples))) if len(examples) > 1 else 0
    return seeded_split(examples, n_eval, seed, *parts)


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
