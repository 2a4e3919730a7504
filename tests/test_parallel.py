"""`lifelong run A B` on CPU trains the runs side by side, one process each, with the same results
every time; a worker's user error still ends in one line and exit code 2."""

from __future__ import annotations

import json

import yaml

from tests.conftest import small_config_dict
from tests.test_cli_errors import assert_one_line_error, run_cli


def rows(path) -> list[list[float]]:
    return json.loads((path / "matrix.json").read_text())["rows"]


def two_configs(tmp_path, write_config, out: str) -> list[str]:
    made = []
    for method in ("naive", "self_replay"):
        data = small_config_dict(tmp_path, name=method, methods=[method])
        data["output_dir"] = str(tmp_path / out)
        made.append(str(write_config(data, f"{out}-{method}.yaml")))
    return made


def test_side_by_side_runs_finish_and_reproduce(tmp_path, write_config, monkeypatch, capsys):
    for out in ("first", "second"):
        args = ["run", *two_configs(tmp_path, write_config, out), "--jobs", "2", "--no-progress"]
        code, err = run_cli(args, monkeypatch, capsys)
        assert code == 0, err
    for method in ("naive", "self_replay"):
        first, second = tmp_path / "first" / method, tmp_path / "second" / method
        assert (first / "summary.json").is_file() and (first / "curves.png").is_file()
        assert rows(first) == rows(second) and len(rows(first)) == 2
        saved = yaml.safe_load((first / "config.yaml").read_text())
        assert saved["train"]["threads"] >= 1  # kept, so that --resume computes the same numbers


def test_a_worker_error_is_one_line(tmp_path, write_config, monkeypatch, capsys):
    good = two_configs(tmp_path, write_config, "runs")[0]
    data = small_config_dict(tmp_path, name="long", model={"max_length": 4})
    data["output_dir"] = str(tmp_path / "runs")
    bad = str(write_config(data, "long.yaml"))
    code, err = run_cli(["run", good, bad, "--jobs", "2", "--no-progress"], monkeypatch, capsys)
    assert_one_line_error(code, err, "no train example fits the limit of 4 tokens")
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["naive"]  # the failed start left nothing


def test_progress_reads_only_complete_log_lines(tmp_path):
    from lifelong.parallel import steps_done

    log = tmp_path / "train_log.jsonl"
    log.write_text('{"global_step": 1}\n{"global_step": 2}\n{"global_st')  # a worker mid-write
    assert steps_done(tmp_path) == 2
    log.write_text('{"global_st')
    assert steps_done(tmp_path) == 0
