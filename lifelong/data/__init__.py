"""Streams of tasks: built-in ones by name, or tasks declared in YAML from JSONL/CSV files, inline
examples or Hugging Face `datasets`."""

from __future__ import annotations

import dataclasses
import inspect

from lifelong.data.loaders import load_examples
from lifelong.data.registry import BUILTIN_STREAMS, StreamInfo, register_stream
from lifelong.data.spec import RowFormat, StreamConfig, TaskSpec, prompt_format
from lifelong.data.split import seeded_split
from lifelong.data.task import Example, PromptFormat, Stream, Task
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
        stream = Stream(cfg.name or "custom", [build_task(spec, seed, cfg) for spec in cfg.tasks])
    else:
        stream = make_builtin(cfg.builtin, cfg.options, seed)
        if cfg.given():  # the stream's own row format, changed where the config says
            for task in stream.tasks:
                task.format = task_format(task.kind, [cfg], task.format)
    if cfg.name:
        stream.name = cfg.name
    suites = cfg.kept_suites.items()
    stream.kept = [task for name, options in suites for task in kept_tasks(name, options, seed)]
    for task in stream.kept:  # scored in the stream's row format (e.g. chat), never with a task token
        task.format = task_format(task.kind, [cfg], task.format) if cfg.given() else task.format
    clash = set(stream.task_names) & {t.name for t in stream.kept}
    if clash:
        raise UserError(f"task {sorted(clash)[0]!r} is both trained and kept: rename the task")
    return stream


def make_builtin(name: str, options: dict, seed: int, what: str = "stream") -> Stream:
    """The built-in stream `name` built with `options` (each checked against its builder's)."""
    streams = builtin_streams()
    if name not in streams:
        raise UserError(f"unknown {what} {name!r} (known: {', '.join(streams)})")
    make = streams[name].make
    accepted = set(inspect.signature(make).parameters) - {"seed"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise UserError(
            f"{what} {name!r} has no option {unknown[0]!r} (options: {', '.join(sorted(accepted))})"
        )
    try:
        stream = make(seed=seed, **options)
    except (TypeError, ValueError) as err:  # an option of the wrong type, e.g. n_digits: two
        raise UserError(f"{what} {name!r}: bad options {options}: {err}") from None
    if not stream.tasks:
        raise UserError(f"{what} {name!r} has no tasks (options: {options})")
    return stream


def kept_tasks(suite: str, options: dict, seed: int) -> list[Task]:
    """The held-out sets of built-in stream `suite` as kept columns `suite/task`: no training split,
    no task token (a kept set is scored after the bos token alone, if the tokenizer has one)."""
    stream = make_builtin(suite, options, seed, what="kept suite")
    return [
        Task(
            f"{suite}/{t.name}",
            t.kind,
            [],
            t.eval,
            t.metric,
            token="",
            description=t.description,
            parts=t.parts,
        )
        for t in stream.tasks
    ]


def build_task(spec: TaskSpec, seed: int, stream: StreamConfig | None = None) -> Task:
    """A user-declared task; its row format from its own fields, then the stream's (`stream`), then
    the defaults (the default template, plain text, the task token, clipping to the context)."""
    train = load_examples(spec.train, spec.kind, f"task {spec.name!r} train")
    if spec.eval is not None:
        eval_ = load_examples(spec.eval, spec.kind, f"task {spec.name!r} eval")
    else:
        train, eval_ = split_examples(train, spec.eval_fraction, seed, "split", spec.name)
    for split, rows in (("train", train), ("eval", eval_)):
        if not rows:
            raise UserError(f"task {spec.name!r} has no {split} examples")
    fmt = task_format(spec.kind, [spec] if stream is None else [spec, stream])
    return Task(spec.name, spec.kind, train, eval_, spec.metric, spec.token, format=fmt, beta=spec.beta)


def task_format(kind: str, layers: list[RowFormat], base: PromptFormat | None = None) -> PromptFormat:
    """`prompt_format`; a text task (cut into windows) keeps only the task token and the row limit."""
    fmt = prompt_format(layers, base)
    return dataclasses.replace(fmt, template=None, chat=False, system=None) if kind == "text" else fmt


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
    "kept_tasks",
    "builtin_streams",
    "register_stream",
    "toy_stream",
]
