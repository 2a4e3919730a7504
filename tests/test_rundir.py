"""The run directory records what its numbers depend on, refuses resumes that would change them, and
never leaves a half-written file behind."""

from __future__ import annotations

import errno
import io
import json
import os
import platform
from importlib.metadata import version

import pytest
import torch
from rich.console import Console

import lifelong
from lifelong.errors import UserError
from lifelong.report import print_runs
from lifelong.rundir import RunDir, atomic_write, check_resumable, environment

ENVIRONMENT_FIELDS = {
    "cpu", "cores", "torch_threads", "device", "python", "torch", "transformers", "peft", "accelerate",
}  # fmt: skip


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    from lifelong.config import parse_config
    from tests.conftest import small_config_dict

    data = small_config_dict(tmp_path_factory.mktemp("env"), train={"threads": 1})
    return lifelong.run(parse_config(data), show_progress=False).path


def test_a_run_records_its_environment(finished):
    recorded = json.loads((finished / "summary.json").read_text())["environment"]
    at_start = json.loads((finished / "environment.json").read_text())
    assert ENVIRONMENT_FIELDS <= set(recorded)
    assert recorded == at_start  # nothing changed between the start and the results
    assert recorded["torch_threads"] == 1  # the run's train.threads, not the process default
    assert recorded["cores"] == os.cpu_count()
    assert recorded["torch"] == torch.__version__
    assert recorded["transformers"] == version("transformers")
    assert recorded["peft"] == version("peft")
    assert recorded["python"] == platform.python_version()
    assert recorded["cpu"]
    assert recorded["device"].startswith("cuda" if torch.cuda.is_available() else "cpu")


def test_the_report_shows_the_environment_in_one_line(finished):
    out = io.StringIO()
    print_runs([finished], Console(file=out, width=200))
    lines = [line for line in out.getvalue().splitlines() if " ran on " in line]
    assert len(lines) == 1
    assert f"torch {torch.__version__}" in lines[0] and "1 threads" in lines[0]


def test_resuming_in_another_environment_warns(finished, capsys):
    saved = json.loads((finished / "environment.json").read_text())
    atomic_write(finished / "environment.json", json.dumps(saved | {"torch": "0.0.1"}))
    try:
        RunDir.open(finished)
        err = capsys.readouterr().err
        assert err.startswith("warning: resuming in another environment (torch 0.0.1 -> ")
        assert len(err.strip().splitlines()) == 1
    finally:
        atomic_write(finished / "environment.json", json.dumps(saved))


def test_environment_counts_the_threads_the_run_will_use():
    assert environment(threads=3)["torch_threads"] == 3
    assert environment()["torch_threads"] == torch.get_num_threads()


def test_a_resume_may_change_only_fields_that_keep_the_numbers(small_config, tmp_path):
    saved = small_config()
    check_resumable(tmp_path, saved, small_config(train={"keep_checkpoints": 7}, progress=True))
    with pytest.raises(UserError, match=r"in train\.lr,"):
        check_resumable(tmp_path, saved, small_config(train={"lr": 0.5}))
    fewer_evals = {"n_digits": 1, "tasks": ["reverse", "add"], "n_eval": 3}
    with pytest.raises(UserError, match=r"in stream\.options\.n_eval,"):
        check_resumable(tmp_path, saved, small_config(stream={"builtin": "toy", "options": fewer_evals}))


def test_a_failed_write_leaves_no_file(tmp_path, monkeypatch):
    target = tmp_path / "summary.json"
    target.write_text("the old results")

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(UserError, match="No space left on device"):
        atomic_write(target, "new results")
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]
    assert target.read_text() == "the old results"
