"""The `preferences` stream on a tiny model: DPO in the loop learns each objective, naive DPO forgets
the first one, replay of stored pairs keeps it, and a run resumed mid-task (the DPO reference read
back from its checkpoint) gives the uninterrupted run's numbers."""

from __future__ import annotations

import json
import shutil

import pytest
from safetensors.torch import load_file

import lifelong
from lifelong.config import parse_config
from lifelong.data import builtin_streams
from lifelong.data.scenarios.preferences import preferences_stream
from lifelong.errors import UserError

OBJECTIVES = ["concise", "spanish", "polite"]  # polite (longer, with pleasantries) pulls against concise


def config(tmp_path, method, name="p", **train):
    return {
        "name": name,
        "seed": 0,
        "output_dir": str(tmp_path / "runs"),
        "progress": False,
        "stream": {
            "builtin": "preferences",
            "options": {"objectives": OBJECTIVES, "n_train": 64, "n_eval": 16},
        },
        "model": {
            "preset": "tiny",
            "max_length": 128,
            "overrides": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64},
        },
        "train": {
            "steps_per_task": 15,
            "batch_size": 4,
            "lr": 3e-3,
            "eval_examples": 16,
            "threads": 1,
            **train,
        },
        "methods": [method],
    }


def test_stream_is_deterministic_and_registered():
    assert "preferences" in builtin_streams()
    a, b = preferences_stream(seed=3, n_train=20, n_eval=5), preferences_stream(seed=3, n_train=20, n_eval=5)
    assert [t.train for t in a.tasks] == [t.train for t in b.tasks]
    assert a.task_names == ["concise", "truthful", "spanish", "polite"]
    assert all(t.kind == "preference" and len(t.train) == 20 and len(t.eval) == 5 for t in a.tasks)
    for task in a.tasks:
        for ex in task.train + task.eval:
            assert ex.target and ex.rejected and ex.target != ex.rejected
    concise, spanish = a.tasks[0], a.tasks[2]
    assert all(len(ex.target) < len(ex.rejected) for ex in concise.train)
    assert all(ex.prompt.startswith("¿") and ex.rejected.startswith("The capital") for ex in spanish.train)
    held = {ex.prompt for ex in concise.eval}
    assert not held & {ex.prompt for ex in concise.train}  # held-out countries are never trained on
    assert preferences_stream(seed=4, n_train=20).tasks[0].train != a.tasks[0].train
    with pytest.raises(UserError, match="unknown preference objective 'kind'"):
        preferences_stream(objectives=["kind"])


def run(tmp_path, method, **train):
    result = lifelong.run(parse_config(config(tmp_path, method, **train)), show_progress=False)
    return result.progress.matrix, result.path


def test_naive_dpo_forgets_and_replay_keeps_the_first_objective(tmp_path):
    naive, path = run(tmp_path / "naive", "naive")
    replay, _ = run(tmp_path / "replay", "replay")
    # measured (seed 0): naive [[1.0, 0.94, 0.0], [1.0, 1.0, 0.0], [0.0, 0.5, 1.0]];
    # replay's last row [1.0, 1.0, 0.0]: the first two kept, polite not learnt next to them
    assert naive[0][0] == 1.0 and naive[1][1] == 1.0 and naive[2][2] == 1.0  # DPO learns each one
    assert naive[2][0] <= 0.25  # forgotten after polite
    assert replay[2][0] >= 0.9 and replay[2][1] >= 0.9
    log = [json.loads(line) for line in (path / "train_log.jsonl").read_text().splitlines()]
    assert log[0]["loss_dpo"] == pytest.approx(0.6931, abs=1e-3)  # the reference is the model at the start
    assert log[0]["reward_margin"] == 0.0 and log[-1]["reward_margin"] > 0
    matrix = json.loads((path / "matrix.json").read_text())
    assert matrix["baseline"] == [0.0, 0.0, 0.0]
    assert matrix["also_reported"]["reward_margin"]["rows"][0][0] > 0


def test_resume_mid_task_reads_the_reference_back(tmp_path):
    method = {"name": "replay", "replay_fraction": 0.5}
    cfg = config(tmp_path, method, name="whole", checkpoint_every=5, keep_checkpoints=10)
    whole = lifelong.run(parse_config(cfg), show_progress=False)
    ckpt = whole.path / "checkpoints" / "task-002-step-0000010"
    state = load_file(str(ckpt / "preference.safetensors"))
    assert state["train"].shape == (64, 2) and state["eval.0"].shape == (16, 2)
    copy = tmp_path / "runs" / "cut"
    shutil.copytree(whole.path, copy)
    for later in ("task-002-step-0000015", "after-task-002", "task-003-step-0000005"):
        shutil.rmtree(copy / "checkpoints" / later, ignore_errors=True)
    for path in copy.glob("checkpoints/*-003*"):
        shutil.rmtree(path)
    for name in ("summary.json", "matrix.json"):
        (copy / name).unlink(missing_ok=True)
    (copy / "checkpoints" / "latest").write_text("task-002-step-0000010\n")
    resumed = lifelong.resume(copy, show_progress=False)
    assert resumed.progress.matrix == whole.progress.matrix
