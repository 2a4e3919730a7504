"""Progress of a training loop: rich's live bars on a terminal, and off one (a CI log, nohup, a job
scheduler), where rich shows no live bars, one plain line per evaluation instead.

    toy_naive: task 2/4 step 300 loss L scores S1 S2 S3 S4 elapsed 1m05s   (every task's score so far)
    en-tiny: step 100/1025 loss L scores kjv K web W austen A elapsed 2m31s (held-out loss per source)

`loss` is that step's training loss; `elapsed` the run's training and evaluation time so far (across
resumes), or for runs side by side the time since they started.
"""

from __future__ import annotations

import math
import sys
from typing import Any


def on_terminal() -> bool:
    """Whether stdout is a terminal (where live bars show)."""
    return sys.stdout.isatty()


def progress_bar(enabled: bool, *extra_fields: str) -> Any:
    """A rich progress bar of steps with the loss and tokens/s (fields `loss`, `tps`), and each of
    `extra_fields` shown as it is. Off a terminal it is disabled: the loops print lines instead."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}"),
        TextColumn("{task.fields[tps]:,.0f} tok/s"),
        TimeRemainingColumn(),
        *(TextColumn(f"{{task.fields[{name}]}}") for name in extra_fields),
        disable=not enabled or not on_terminal(),
        transient=True,
    )


def duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def stream_position(task: int, n_tasks: int, step: int) -> str:
    """Where a run of a stream is: `task` 0-based, -1 for the baseline evaluation before training."""
    return "baseline" if task < 0 else f"task {task + 1}/{n_tasks} step {step}"


def eval_line(run: str, where: str, loss: float | None, scores: Any, elapsed: float) -> str:
    """One finished evaluation as a line; `scores` a list (one per task) or a mapping (name -> score)."""
    lost = "" if loss is None or math.isnan(loss) else f" loss {loss:.3f}"
    if isinstance(scores, dict):
        shown = " ".join(f"{name} {_score(v)}" for name, v in scores.items())
    else:
        shown = " ".join(_score(v) for v in scores)
    return f"{run}: {where}{lost} scores {shown} elapsed {duration(elapsed)}"


def _score(value: float | None) -> str:
    return "nan" if value is None or value != value else f"{value:.3f}"


def print_line(line: str) -> None:
    print(line, flush=True)
