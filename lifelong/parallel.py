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
from lifelong.run import RunDir
from lifelong.train import Interrupted


def available_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def default_jobs(n_runs: int) -> int:
    """One process per run up to the number of cores on CPU; one at a time on an accelerator."""
    if torch.cuda.is_available():
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
    cfgs = [with_threads(cfg, cfg.train.threads or threads_per_job(jobs)) for cfg in cfgs]
    paths = [RunDir.create(cfg).path for cfg in cfgs]
    with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(_run_in_worker, str(path)) for path in paths]
        try:
            watch(futures, paths, show_progress)
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


def steps_done(path: Path) -> int:
    log = path / "train_log.jsonl"
    if not log.is_file():
        return 0
    data = log.read_bytes()
    lines = data[: data.rfind(b"\n") + 1].splitlines()  # complete lines: a worker may be mid-write
    return json.loads(lines[-1])["global_step"] if lines else 0


def watch(futures: list[Future], paths: list[Path], show_progress: bool) -> None:
    """A line per run with the steps done (read from its step log) until every worker is done."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = (SpinnerColumn(), TextColumn("{task.description}: step {task.completed}"), TimeElapsedColumn())
    with Progress(*columns, disable=not show_progress, transient=True) as bar:
        ids = [bar.add_task(path.name, total=None) for path in paths]
        while not all(f.done() for f in futures):
            for task_id, path in zip(ids, paths, strict=True):
                bar.update(task_id, completed=steps_done(path))
            time.sleep(0.5)
