"""The registry of built-in streams: what `lifelong streams` lists and `stream: NAME` builds. A leaf
that the stream modules (lifelong/data/toy.py's caller, lifelong/data/scenarios/*) register into."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lifelong.data.task import Stream
from lifelong.errors import UserError


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
    # Methods that `lifelong run --stream NAME --method M` composes with M when M adds no weights of its
    # own (e.g. "lora:r=16" for a stream on a pretrained base: `naive` then trains LoRA adapters).
    adapter: str = ""


BUILTIN_STREAMS: dict[str, StreamInfo] = {}


def register_stream(name: str, info: StreamInfo) -> None:
    if name in BUILTIN_STREAMS:
        raise ValueError(f"stream {name!r} is registered twice")
    BUILTIN_STREAMS[name] = info


def describe_stream(name: str, info: StreamInfo, sizes: bool = True) -> str:
    """A built-in stream in a few lines: what it is, its source, format and metric, and (`sizes`) its
    tasks with their sizes, built with seed 0 and the default options (the data must be installed). A
    stream that `needs` data not installed with the package is described without being built."""
    doc = (info.make.__doc__ or "").strip().splitlines()[0]
    lines = [
        f"{name}: {doc}",
        f"  source: {info.source}",
        f"  format: {info.task_format}; metric: {info.metric}",
    ]
    if info.needs:
        return "\n".join([*lines, f"  needs: {info.needs}"])
    if not sizes:
        return "\n".join(lines)
    try:
        stream = info.make(seed=0)
    except UserError as err:
        return "\n".join([*lines, f"  not available here: {err}"])
    for task in stream.tasks:
        if task.kind == "text":
            chars = [sum(len(e.prompt) for e in split) for split in (task.train, task.eval)]
            size = f"{chars[0]:,} / {chars[1]:,} characters"
        else:
            size = f"{len(task.train):,} / {len(task.eval):,} examples"
        label = task.token if task.format.task_token else task.name  # rows without a token: its name
        lines.append(f"  {label:16s} train / eval {size}  {task.description}")
    return "\n".join(lines)
