"""What the two training loops share (lifelong/train.py, lifelong/pretrain.py): the optimizer, the LR
schedule, the step (backward, clipping, optimizer step, zero_grad), Ctrl-C handling, trackers.

Only these functions call backward, clipping, the optimizer and zero_grad; the loops call them.
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import shutil
import signal
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
from pydantic import BaseModel

from lifelong.errors import UserError


class Schedule(Protocol):
    """The fields of a config that shape the LR schedule (TrainConfig, and pretraining's TrainSpec)."""

    warmup_steps: int
    schedule: Literal["constant", "cosine", "linear"]
    min_lr_ratio: float


class OptimizerSettings(Protocol):
    lr: float
    betas: tuple[float, float]
    weight_decay: float


def lr_factor(step: int, total: int, cfg: Schedule) -> float:
    """Multiplier of the peak LR at `step` (0-based) of a schedule of `total` steps."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    frac = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    shape = 0.5 * (1 + math.cos(math.pi * frac)) if cfg.schedule == "cosine" else 1 - frac
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * shape


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def new_optimizer(
    params: Iterable[torch.nn.Parameter], cfg: OptimizerSettings, device: torch.device
) -> torch.optim.Optimizer:
    """AdamW over `params` with the config's rate, betas and weight decay."""
    # the fused kernel is several times faster than the per-tensor loop on CPU and on CUDA
    fused = True if device.type in ("cpu", "cuda") else None
    return torch.optim.AdamW(
        list(params), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, fused=fused
    )


def optimizer_step(
    accelerator: Any | None,
    loss: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    model: torch.nn.Module,
    grad_clip: float | None,
) -> None:
    """Backward of `loss`, gradients clipped to `grad_clip` (if set), one optimizer step, gradients
    cleared. Through the accelerate `Accelerator` when given (mixed precision, several processes)."""
    if accelerator is None:
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    else:
        accelerator.backward(loss)
        if grad_clip:
            accelerator.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


# Contexts up to this many tokens use eager attention under train.compile: inductor fuses its
# matmul-softmax-matmul with the rest of the block, while SDPA stays an opaque kernel whose per-call
# cost dominates at a dozen tokens (tiny preset, 16-token rows: 1.3x the step with eager + compile).
EAGER_ATTENTION_MAX_CONTEXT = 64


def compiled_for_training(model: torch.nn.Module, raw: torch.nn.Module, enabled: bool) -> torch.nn.Module:
    """`model` (the prepared training module) under torch.compile when `enabled`, else unchanged.

    Only the training forward is compiled: `raw` (the unwrapped model) stays as it is for evaluation,
    sampling, frozen copies and checkpoints, so saved state dicts keep their plain keys (no
    `_orig_mod.` prefix). Sizes are symbolic from the start (`dynamic=True`): batches of every width
    and row count share one graph, compiled once per process (static sizes compiled again at the
    first new width, and were no faster).
    """
    if not enabled:
        return model
    context = getattr(raw.config, "max_position_embeddings", None) or 0
    if context <= EAGER_ATTENTION_MAX_CONTEXT and hasattr(raw, "set_attn_implementation"):
        raw.set_attn_implementation("eager")
    return torch.compile(model, dynamic=True)


@contextmanager
def stop_on_ctrl_c() -> Iterator[dict[str, bool]]:
    """The first Ctrl-C sets a flag that the loop reads between steps; a second one stops at once."""
    flag = {"stop": False}

    def handler(signum, frame):
        if flag["stop"]:
            raise KeyboardInterrupt
        flag["stop"] = True

    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread: leave Ctrl-C alone
        yield flag
        return
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


TRACKER_PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}
# a character outside these in a metric or parameter name is refused by MLflow: it becomes "_" for all
TRACKER_NAME_UNSAFE = re.compile(r"[^\w\-. /]")


def check_trackers(trackers: list[str]) -> None:
    for name in trackers:
        if importlib.util.find_spec(TRACKER_PACKAGES[name]) is None:
            raise UserError(
                f"tracking with {name} needs its package: pip install {TRACKER_PACKAGES[name]} "
                "(or pip install 'lifelong[tracking]')"
            )


def tracker_key(name: str) -> str:
    """`name` as a metric or parameter name every tracker accepts (a task named `q&a` logs `q_a`)."""
    return re.sub("/+", "/", TRACKER_NAME_UNSAFE.sub("_", name)).strip("/ ") or "_"


def flat_config(cfg: BaseModel) -> dict[str, str | int | float | bool]:
    """The config as flat scalars, the form experiment trackers accept as hyperparameters."""
    out: dict[str, str | int | float | bool] = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(f"{prefix}.{i}", v)
        elif value is not None:
            out[tracker_key(prefix)] = value if isinstance(value, str | int | float | bool) else str(value)

    walk("", cfg.model_dump(mode="json"))
    return out


def tracker_init_kwargs(trackers: list[str], run_dir: Path) -> dict[str, dict[str, Any]]:
    """Each tracker's own settings: the run's directory name as the MLflow and W&B run name, and
    their records inside the run directory unless MLFLOW_TRACKING_URI or WANDB_DIR point elsewhere."""
    kwargs: dict[str, dict[str, Any]] = {}
    if "mlflow" in trackers:
        if not os.environ.get("MLFLOW_TRACKING_URI"):
            import mlflow

            # MLflow's own default is a database in the working directory; a run keeps its records
            mlflow.set_tracking_uri(f"sqlite:///{(run_dir / 'tracking' / 'mlflow.db').resolve()}")
        kwargs["mlflow"] = {"run_name": run_dir.name}
    if "wandb" in trackers:
        kwargs["wandb"] = {
            "name": run_dir.name,
            "dir": os.environ.get("WANDB_DIR") or str(run_dir / "tracking"),
        }
    return kwargs


def tracker_errors(trackers: list[str]) -> tuple[type[BaseException], ...]:
    """What the trackers raise when they cannot start (W&B not logged in, an MLflow server away)."""
    errors: list[type[BaseException]] = []
    if "mlflow" in trackers:
        from mlflow.exceptions import MlflowException

        errors.append(MlflowException)
    if "wandb" in trackers:
        from wandb.errors import Error as WandbError

        errors.append(WandbError)
    return tuple(errors)


def start_trackers(
    accelerator: Any, trackers: list[str], project: str, run_dir: Path, cfg: BaseModel
) -> None:
    """Open the configured trackers under `project` (the MLflow experiment, the W&B project, the
    TensorBoard folder in `run_dir/tracking`) with the flat config as hyperparameters. One that cannot
    start is a UserError; the others are closed again and a `tracking` folder made here is removed."""
    folder = run_dir / "tracking"
    made = not folder.exists()
    folder.mkdir(exist_ok=True)
    kwargs = tracker_init_kwargs(trackers, run_dir)
    try:
        accelerator.init_trackers(project, config=flat_config(cfg), init_kwargs=kwargs)
    except tracker_errors(trackers) as err:
        for tracker in accelerator.trackers:  # those started before the one that failed
            with suppress(Exception):  # one that never started has nothing to close
                tracker.finish()
        accelerator.trackers = []
        if made:
            shutil.rmtree(folder, ignore_errors=True)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(
            f"a tracker could not start ({first}); W&B without an account: WANDB_MODE=offline"
        ) from None


def end_trackers(accelerator: Any, outcome: Literal["finished", "failed", "killed"]) -> None:
    """Close every tracker; a run that raised or was stopped is marked so where the tracker can say it
    (MLflow's run status, W&B's exit code)."""
    if outcome != "finished" and accelerator.is_main_process:
        for tracker in accelerator.trackers:
            if tracker.name == "mlflow":
                import mlflow

                mlflow.end_run(status=outcome.upper())
            elif tracker.name == "wandb":
                tracker.run.finish(exit_code=1 if outcome == "failed" else 255)
    accelerator.end_training()
