"""The Ray Tune backend of `lifelong sweep --ray auto|ADDRESS` (`pip install 'lifelong[ray]'`).

Each unfinished point is one trial of a function trainable that resumes the point's run directory
in its own process, exactly as a local worker does, and reports the point's metrics. The run
directories are the sweep's own (absolute paths), so a cluster's workers need the sweep directory on
a shared filesystem; the results are those of the local backend at the same thread count. Ray's own
records go to `<sweep dir>/ray/`. `auto` starts a local Ray instance with one CPU per core; an
address (`ray start --head` prints it) joins that cluster.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch

from lifelong.errors import UserError, first_line
from lifelong.parallel import available_cores
from lifelong.rundir import saved_config_data

RAY_DIR = "ray"  # inside the sweep directory: Tune's experiment state and trial logs


def train_point(config: dict[str, Any]) -> None:
    """A trial: train (or resume) one point's run directory, then report its metrics."""
    from ray import tune

    from lifelong.report import point_metrics
    from lifelong.train import resume

    # Tune starts a trial in a directory of its own; a config's relative data paths mean the sweep's
    os.chdir(config["cwd"])
    path = Path(config["path"])
    resume(path, show_progress=False)
    metrics = point_metrics(path)
    tune.report({k: math.nan if v is None else v for k, v in metrics.items()})


def run_trials(paths: list[Path], address: str) -> None:
    """Every run directory in `paths` (of one sweep) as a Ray Tune trial; the first failure is raised
    as one line naming its point."""
    try:
        import ray
        from ray import tune
    except ImportError:
        raise UserError("--ray needs Ray Tune: pip install 'lifelong[ray]'") from None
    threads = saved_config_data(paths[0])["train"].get("threads") or 1  # the points share it
    gpus = 1 if torch.cuda.is_available() else 0
    if address == "auto":
        ray.init(num_cpus=available_cores(), include_dashboard=False, log_to_driver=False)
    else:
        ray.init(address=address, log_to_driver=False)
    try:
        trainable = tune.with_resources(train_point, {"cpu": threads, "gpu": gpus})
        space = {"path": tune.grid_search([str(p.resolve()) for p in paths]), "cwd": os.getcwd()}
        storage = paths[0].resolve().parent.parent / RAY_DIR
        run_config = tune.RunConfig(storage_path=str(storage), name="tune", verbose=0)
        results = tune.Tuner(trainable, param_space=space, run_config=run_config).fit()
    finally:
        ray.shutdown()
    for result in results:
        if result.error is not None:
            point = Path(result.config["path"]).name
            raise UserError(f"sweep point {point} failed under Ray: {first_line(result.error)}")
