"""A run killed with SIGKILL in the middle of a task resumes to the same numbers as an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import lifelong
from lifelong.config import parse_config
from tests.conftest import small_config_dict

STEPS, EVERY = 80, 25


def resume_config(tmp_path, name):
    return small_config_dict(
        tmp_path,
        name=name,
        stream={"builtin": "toy", "options": {"n_digits": 1, "tasks": ["reverse", "sort"], "n_eval": 16}},
        train={"steps_per_task": STEPS, "batch_size": 32, "checkpoint_every": EVERY, "eval_every": 10},
        # chunks of 7 steps do not line up with checkpoints: the chunk in use must be saved
        methods=[{"name": "self_replay", "replay_fraction": 0.5, "refresh_every": 7, "loss": "kl"}],
    )


def read_steps(path):
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def test_sigkill_mid_task_then_resume_matches(tmp_path, write_config):
    reference = lifelong.run(parse_config(resume_config(tmp_path, "whole")), show_progress=False)

    cfg_path = write_config(resume_config(tmp_path, "killed"))
    run_dir = tmp_path / "runs" / "killed"
    cmd = [sys.executable, "-m", "lifelong.cli", "run", str(cfg_path), "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    kill_after = STEPS + EVERY + 10  # inside task 2, after its first mid-task checkpoint
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        steps = read_steps(run_dir / "train_log.jsonl")
        if steps and steps[-1]["global_step"] >= kill_after:
            break
        time.sleep(0.01)
    assert proc.poll() is None, f"run ended before it could be killed: {proc.stderr.read().decode()}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = read_steps(run_dir / "train_log.jsonl")[-1]["global_step"]
    assert STEPS + EVERY < killed_at < 2 * STEPS
    assert not (run_dir / "matrix.json").exists()

    resumed = lifelong.resume(run_dir, show_progress=False)

    assert resumed.progress.matrix == reference.progress.matrix
    assert resumed.progress.baseline == reference.progress.baseline
    whole = read_steps(reference.path / "train_log.jsonl")
    again = read_steps(run_dir / "train_log.jsonl")
    assert [r["global_step"] for r in again] == list(range(1, 2 * STEPS + 1))
    assert [r["loss"] for r in again] == [r["loss"] for r in whole]
    evals = lambda p: [e["scores"] for e in read_steps(p / "evals.jsonl")]  # noqa: E731
    assert evals(run_dir) == evals(reference.path)


def test_resume_of_a_finished_run_changes_nothing(small_config):
    result = lifelong.run(small_config(), show_progress=False)
    before = (result.path / "matrix.json").read_text()
    again = lifelong.resume(result.path, show_progress=False)
    assert again.progress.matrix == result.progress.matrix
    assert (result.path / "matrix.json").read_text() == before
