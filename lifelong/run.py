"""The run directory: config, logs, results and checkpoints, all written atomically, no pickle.

runs/<name>/
  config.yaml            the resolved config
  train_log.jsonl        one line per training step
  evals.jsonl            every evaluation of the whole stream (for the curves)
  matrix.json/.csv       the accuracy matrix with the initial model's row
  summary.json           AA, AIA, FGT, BWT, FWD, times
  curves.png             every task's score over training steps
  checkpoints/<tag>/     model.safetensors, optimizer.*, method-<i>.*, rng.safetensors, progress.json
  checkpoints/latest     the tag of the newest complete checkpoint
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file, load_model, save_file, save_model

from lifelong.config import RunConfig, parse_config
from lifelong.errors import UserError


@dataclass
class Progress:
    """Where the run stands; saved in every checkpoint as progress.json."""

    config_hash: str
    task: int = 0  # the task being trained (== number of tasks when finished)
    step: int = 0  # steps of `task` already done
    baseline: list[float] | None = None  # scores of the initial model, before any training
    matrix: list[list[float]] = field(default_factory=list)  # row k: after task k
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    trainable_params: int = 0  # the most parameters trained at once (the peak over tasks)
    total_params: int = 0  # every parameter of the trained model, adapters included

    @property
    def finished(self) -> bool:
        return bool(self.matrix) and self.task >= len(self.matrix[0])


def atomic_write(path: Path, data: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


class RunDir:
    def __init__(self, path: Path):
        self.path = path
        self.ckpt_dir = path / "checkpoints"

    @classmethod
    def create(cls, cfg: RunConfig) -> RunDir:
        """A new directory `output_dir/name`, or `name-2`, `name-3`... if that one exists."""
        root = Path(cfg.output_dir)
        path, n = root / cfg.name, 1
        while path.exists():
            n += 1
            path = root / f"{cfg.name}-{n}"
        try:
            path.mkdir(parents=True)
            probe = path / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as err:
            raise UserError(f"cannot write the run directory {str(path)!r}: {err.strerror or err}") from None
        run = cls(path)
        atomic_write(path / "config.yaml", yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
        return run

    def remove_if_unstarted(self) -> None:
        """Remove the directory if it holds nothing but its config (a run that failed to start, e.g. on
        missing data), so that a failed start leaves no half-made run behind."""
        if self.path.is_dir() and [p.name for p in self.path.iterdir()] == ["config.yaml"]:
            shutil.rmtree(self.path)

    @classmethod
    def open(cls, path: Path, cfg: RunConfig | None = None) -> tuple[RunDir, RunConfig]:
        """An existing run to resume; `cfg`, if given, must compute the same thing as the saved one."""
        if not (path / "config.yaml").is_file():
            raise UserError(f"{str(path)!r} is not a run directory (no config.yaml)")
        saved = parse_config(yaml.safe_load((path / "config.yaml").read_text()), str(path / "config.yaml"))
        if cfg is not None and cfg.config_hash() != saved.config_hash():
            raise UserError(
                f"the config differs from the one run {str(path)!r} was started with; "
                "resume without a config, or start a new run"
            )
        if not os.access(path, os.W_OK):
            raise UserError(f"cannot write the run directory {str(path)!r}")
        return cls(path), cfg or saved

    # ---------------------------------------------------------------- logs
    def append(self, name: str, record: dict[str, Any]) -> None:
        with (self.path / name).open("a") as f:
            f.write(json.dumps(record) + "\n")

    def read_log(self, name: str) -> list[dict[str, Any]]:
        path = self.path / name
        if not path.exists():
            return []
        records = []
        for line in path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut short by a crash
        return records

    def truncate_logs(self, global_step: int) -> None:
        """Drop log lines written after the checkpoint a resumed run starts from."""
        for name in ("train_log.jsonl", "evals.jsonl"):
            kept = [r for r in self.read_log(name) if r["global_step"] <= global_step]
            atomic_write(self.path / name, "".join(json.dumps(r) + "\n" for r in kept))

    # --------------------------------------------------------- checkpoints
    def save_checkpoint(self, tag: str, model, optimizer, methods, progress: Progress, rng: dict) -> None:
        tmp = Path(tempfile.mkdtemp(dir=self.path, prefix=".ckpt-"))
        save_model(model, str(tmp / "model.safetensors"))
        if optimizer is not None:
            save_tensors_and_scalars(tmp / "optimizer", flatten_optimizer(optimizer.state_dict()))
        for i, method in enumerate(methods):
            save_tensors_and_scalars(tmp / f"method-{i}", method.state_dict())
        save_file(rng, str(tmp / "rng.safetensors"))
        write_json(tmp / "progress.json", asdict(progress))
        self.ckpt_dir.mkdir(exist_ok=True)
        final = self.ckpt_dir / tag
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        atomic_write(self.ckpt_dir / "latest", tag + "\n")

    def prune_checkpoints(self, keep: int) -> None:
        """Keep every task-end checkpoint and the newest `keep` mid-task ones."""
        mid = sorted(p for p in self.ckpt_dir.glob("task-*-step-*") if p.is_dir())
        for old in mid[:-keep]:
            shutil.rmtree(old, ignore_errors=True)

    def latest_checkpoint(self) -> Path | None:
        pointer = self.ckpt_dir / "latest"
        if not pointer.exists():
            return None
        path = self.ckpt_dir / pointer.read_text().strip()
        return path if (path / "progress.json").exists() else None

    def load_checkpoint(self, path: Path, model, methods) -> tuple[Progress, dict | None, dict]:
        """Restore the model's weights and the methods' states; return progress, optimizer state, rng."""
        load_model(model, str(path / "model.safetensors"))
        for i, method in enumerate(methods):
            method.load_state_dict(load_tensors_and_scalars(path / f"method-{i}"), model)
        optimizer = None
        if (path / "optimizer.json").exists():
            optimizer = unflatten_optimizer(load_tensors_and_scalars(path / "optimizer"))
        progress = Progress(**json.loads((path / "progress.json").read_text()))
        return progress, optimizer, load_file(str(path / "rng.safetensors"))


def save_tensors_and_scalars(stem: Path, state: dict[str, Any]) -> None:
    """Tensors to `<stem>.safetensors`, everything else (JSON-able) to `<stem>.json`."""
    tensors, seen = {}, set()
    for key, value in state.items():
        if isinstance(value, torch.Tensor):
            shared = value.untyped_storage().data_ptr() in seen  # e.g. tied embeddings
            seen.add(value.untyped_storage().data_ptr())
            tensors[key] = value.detach().clone() if shared else value.detach().contiguous()
    scalars = {k: v for k, v in state.items() if not isinstance(v, torch.Tensor)}
    save_file(tensors, str(stem.with_suffix(".safetensors")))
    write_json(stem.with_suffix(".json"), scalars)


def load_tensors_and_scalars(stem: Path) -> dict[str, Any]:
    return load_file(str(stem.with_suffix(".safetensors"))) | json.loads(
        stem.with_suffix(".json").read_text()
    )


def flatten_optimizer(state: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {"param_groups": state["param_groups"]}
    for pid, slots in state["state"].items():
        for key, value in slots.items():
            flat[f"state.{pid}.{key}"] = value
    return flat


def unflatten_optimizer(flat: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in flat.items():
        if key.startswith("state."):
            _, pid, slot = key.split(".", 2)
            state.setdefault(int(pid), {})[slot] = value
    return {"state": state, "param_groups": flat["param_groups"]}
