"""Several runs at once, one process each.

A small model cannot keep several CPU cores busy with one run (its matrices are too small to split
well), so on a machine without a GPU `lifelong run A B` trains A and B side by side, each process on
its share of the cores. Each run directory is created here first (so a bad output directory fails
before any training), then every worker resumes its directory from the start. With a GPU, runs go
one after another, each with the whole device.

Floating-point results depend on the number of threads, so a run's numbers are reproduced by the
same command with the same `--jobs` on the same machine. The thread count is kept in the run's
config (`train.threads`), so `--resume` continues with the same one.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import Future, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path

import torch

from lifelong.config import RunConfig
from lifelong.errors import UserError
from lifelong.progress import eval_line, on_terminal, print_line, stream_position
from lifelong.rundir import RunDir
from lifelong.train import Interrupted


def available_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def default_jobs(n_runs: int) -> int:
    """One process per run up to the number of cores on CPU; one at a time on an accelerator, or when a
    launcher already runs several processes (`accelerate launch`: they train each run together)."""
    if torch.cuda.is_available() or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return 1
    return max(1, min(n_runs, available_cores()))


def threads_per_job(jobs: int) -> int:
    return max(1, available_cores() // jobs)


def with_threads(cfg: RunConfig, threads: int) -> RunConfig:
    return cfg.model_copy(update={"train": cfg.train.model_copy(update={"threads": threads})})


def _run_in_worker(path: str) -> str:
    from lifelong.train import resume

    return str(resume(path, show_progress=False).path)


def run_side_by_side(cfgs: list[RunConfig], jobs: int, show_progress: bool = True) -> list[Path]:
    """Run every config in its own process, at most `jobs` at a time; return the run directories."""
    check_not_launched()
    cfgs = [with_threads(cfg, cfg.train.threads or threads_per_job(jobs)) for cfg in cfgs]
    paths = [RunDir.create(cfg).path for cfg in cfgs]
    return continue_side_by_side(paths, jobs, show_progress, [cfg.progress for cfg in cfgs])


def continue_side_by_side(
    paths: list[Path], jobs: int, show_progress: bool = True, shown: list[bool] | None = None
) -> list[Path]:
    """Resume every run directory in its own process, at most `jobs` at a time: new ones (made by
    `RunDir.create`, their thread count in their config) start from the beginning, started ones from
    their newest checkpoint, finished ones are left as they are. `shown`: whose progress to print."""
    check_not_launched()
    with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(_run_in_worker, str(path)) for path in paths]
        try:
            watch(futures, paths, show_progress, shown or [True] * len(paths))
        except KeyboardInterrupt:  # the workers got the same Ctrl-C: they checkpoint and stop
            wait(futures)
            unfinished = [str(p) for p, f in zip(paths, futures, strict=True) if f.exception() is not None]
            raise Interrupted(" and lifelong run --resume ".join(unfinished)) from None
        for path, future in zip(paths, futures, strict=True):
            if future.exception() is not None:
                RunDir(path).remove_if_unstarted()
        for future in futures:
            future.result()  # a worker's error (a UserError, a divergence) is raised here
    return paths


def check_not_launched() -> None:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UserError("--jobs runs side by side on one process each: under a launcher, use --jobs 1")


def complete_lines(log: Path) -> list[bytes]:
    """The lines of a JSONL log that are written to the end: a worker may be mid-write."""
    if not log.is_file():
        return []
    data = log.read_bytes()
    return data[: data.rfind(b"\n") + 1].splitlines()


def steps_done(path: Path) -> int:
    lines = complete_lines(path / "train_log.jsonl")
    return json.loads(lines[-1])["global_step"] if lines else 0


class EvalLines:
    """Off a terminal: a line for each evaluation a run has written to its evals.jsonl since last asked."""

    def __init__(self, paths: list[Path]):
        self.paths, self.seen, self.start = paths, [0] * len(paths), time.perf_counter()

    def print_new(self) -> None:
        for i, path in enumerate(self.paths):
            evals = complete_lines(path / "evals.jsonl")
            if len(evals) <= self.seen[i]:
                continue
            losses = {
                r["global_step"]: r.get("loss")
                for r in map(json.loads, complete_lines(path / "train_log.jsonl"))
            }
            for line in evals[self.seen[i] :]:
                record = json.loads(line)
                loss = losses.get(record["global_step"]) if record["task"] >= 0 else None
                where = stream_position(record["task"], len(record["scores"]), record["step"])
                elapsed = time.perf_counter() - self.start
                print_line(eval_line(path.name, where, loss, record["scores"], elapsed))
            self.seen[i] = len(evals)


def watch(futures: list[Future], paths: list[Path], show_progress: bool, shown: list[bool]) -> None:
    """Until every worker is done: on a terminal a live line per run with the steps done (read from its
    step log); off one, a line per finished evaluation of each run whose config has `progress` on."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = (SpinnerColumn(), TextColumn("{task.description}: step {task.completed}"), TimeElapsedColumn())
    piped = [path for path, show in zip(paths, shown, strict=True) if show]
    lines = EvalLines(piped) if show_progress and not on_terminal() else None
    with Progress(*columns, disable=not show_progress or lines is not None, transient=True) as bar:
        ids = [bar.add_task(path.name, total=None) for path in paths]
        while not all(f.done() for f in futures):
            for task_id, path in zip(ids, paths, strict=True):
                bar.update(task_id, completed=steps_done(path))
            if lines is not None:
                lines.print_new()
            time.sleep(0.5)
    if lines is not None:
        lines.print_new()
