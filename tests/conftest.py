"""Shared fixtures: a small, fast run config on the toy stream (1-digit tasks, a tiny model)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from lifelong.config import parse_config

TINY_MODEL = {
    "preset": "tiny",
    "max_length": 16,
    "overrides": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64},
}


def small_config_dict(tmp_path: Path, **changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "small",
        "seed": 0,
        "output_dir": str(tmp_path / "runs"),
        "progress": False,
        "stream": {"builtin": "toy", "options": {"n_digits": 1, "tasks": ["reverse", "add"], "n_eval": 16}},
        "model": TINY_MODEL,
        "train": {"steps_per_task": 6, "batch_size": 8, "eval_examples": 8},
        "methods": ["naive"],
    }
    for key, value in changes.items():
        data[key] = {**data[key], **value} if key in ("train", "model") else value
    return data


@pytest.fixture
def small_config(tmp_path):
    def make(**changes):
        return parse_config(small_config_dict(tmp_path, **changes))

    return make


@pytest.fixture
def write_config(tmp_path):
    def write(data: dict[str, Any], name: str = "cfg.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data))
        return path

    return write


def killed_copy(run: Path, tag: str, dest: Path) -> Path:
    """`run` as its directory was right after checkpoint `tag` (a run killed there), copied to `dest`:
    `latest` names `tag` and the results files are gone."""
    shutil.copytree(run, dest)
    (dest / "checkpoints" / "latest").write_text(tag + "\n")
    for name in ("matrix.json", "summary.json"):
        (dest / name).unlink()
    return dest
