"""train.compile: the compiled training forward gives the eager run's losses and matrix (float noise),
resumes from its checkpoints, saves the plain model's keys, and refuses methods that swap weights."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

import lifelong
from lifelong.config import parse_config
from lifelong.errors import UserError
from tests.conftest import killed_copy, small_config_dict

LOSS_TOLERANCE = 1e-4


def config(tmp_path, name: str, compile_: bool):
    return parse_config(
        small_config_dict(
            tmp_path,
            name=name,
            train={
                "steps_per_task": 6,
                "batch_size": 8,
                "eval_examples": 8,
                "checkpoint_every": 3,
                "compile": compile_,
            },
            methods=[{"name": "self_replay", "replay_fraction": 0.5, "refresh_every": 2, "loss": "kl"}],
        )
    )


def losses(run_path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run_path / "train_log.jsonl").read_text().splitlines()]


def test_compiled_run_matches_eager_and_resumes(tmp_path):
    eager = lifelong.run(config(tmp_path, "eager", False), show_progress=False)
    compiled = lifelong.run(config(tmp_path, "compiled", True), show_progress=False)

    assert losses(compiled.path) == pytest.approx(losses(eager.path), abs=LOSS_TOLERANCE)
    for row_c, row_e in zip(compiled.progress.matrix, eager.progress.matrix, strict=True):
        assert row_c == pytest.approx(row_e, abs=0.13)  # one of 8 answers may flip on float noise
    weights = load_file(str(compiled.path / "checkpoints" / "after-task-001" / "model.safetensors"))
    assert not [k for k in weights if "_orig_mod" in k]

    killed = killed_copy(compiled.path, "task-002-step-0000003", tmp_path / "killed")
    resumed = lifelong.resume(killed, show_progress=False)
    for row_r, row_c in zip(resumed.progress.matrix, compiled.progress.matrix, strict=True):
        assert row_r == pytest.approx(row_c, abs=1e-6)
    assert losses(resumed.path) == pytest.approx(losses(compiled.path), abs=LOSS_TOLERANCE)


def test_compile_refuses_a_method_that_swaps_weights(tmp_path):
    data = small_config_dict(tmp_path, train={"compile": True}, methods=[{"name": "lora_per_task"}])
    with pytest.raises(UserError, match="train.compile cannot run with method lora_per_task"):
        parse_config(data)
