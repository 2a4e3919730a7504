"""A user's mistake gives one line naming the problem and exit code 2; no run directory is damaged."""

from __future__ import annotations

import os
import sys

import pytest

from lifelong.cli import main
from tests.conftest import small_config_dict


def run_cli(args: list[str], monkeypatch, capsys) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["lifelong", *args])
    try:
        main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code or 0
    return code, capsys.readouterr().err


def assert_one_line_error(code: int, err: str, *words: str) -> None:
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0], lines[0]


def test_unknown_method(tmp_path, write_config, monkeypatch, capsys):
    path = write_config(small_config_dict(tmp_path, methods=["forgetless"]))
    code, err = run_cli(["run", str(path)], monkeypatch, capsys)
    assert_one_line_error(code, err, "unknown method", "forgetless", "self_replay")


def test_unknown_stream(tmp_path, write_config, monkeypatch, capsys):
    path = write_config(small_config_dict(tmp_path, stream={"builtin": "nope"}))
    code, err = run_cli(["run", str(path)], monkeypatch, capsys)
    assert_one_line_error(code, err, "unknown stream", "nope")


def test_malformed_yaml(tmp_path, monkeypatch, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  lr: [1e-3\n  steps: 4\n")
    code, err = run_cli(["run", str(path)], monkeypatch, capsys)
    assert_one_line_error(code, err, "malformed YAML", "bad.yaml")


def test_missing_config_file(tmp_path, monkeypatch, capsys):
    code, err = run_cli(["run", str(tmp_path / "absent.yaml")], monkeypatch, capsys)
    assert_one_line_error(code, err, "absent.yaml", "not found")


def custom_task(**source):
    return {
        "tasks": [{"name": "qa", "train": source, "eval": {"examples": [{"prompt": "a", "target": "b"}]}}]
    }


def test_missing_data_file(tmp_path, write_config, monkeypatch, capsys):
    data = small_config_dict(tmp_path, stream=custom_task(file=str(tmp_path / "gone.jsonl")))
    code, err = run_cli(["run", str(write_config(data))], monkeypatch, capsys)
    assert_one_line_error(code, err, "gone.jsonl", "not found")
    assert not list((tmp_path / "runs").glob("*"))


def test_empty_task(tmp_path, write_config, monkeypatch, capsys):
    (tmp_path / "empty.jsonl").write_text("")
    data = small_config_dict(tmp_path, stream=custom_task(file=str(tmp_path / "empty.jsonl")))
    code, err = run_cli(["run", str(write_config(data))], monkeypatch, capsys)
    assert_one_line_error(code, err, "qa", "no train examples")


def test_sequence_longer_than_context(tmp_path, write_config, monkeypatch, capsys):
    long_prompt = "x" * 100
    data = small_config_dict(tmp_path, stream=custom_task(examples=[{"prompt": long_prompt, "target": "y"}]))
    code, err = run_cli(["run", str(write_config(data))], monkeypatch, capsys)
    assert_one_line_error(code, err, "qa", "longer than the model's context of 16")


def test_bad_value(tmp_path, write_config, monkeypatch, capsys):
    data = small_config_dict(tmp_path, train={"batch_size": -3})
    code, err = run_cli(["run", str(write_config(data))], monkeypatch, capsys)
    assert_one_line_error(code, err, "train.batch_size")


def snapshot(path):
    return {p: p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_resume_with_different_config(tmp_path, write_config, monkeypatch, capsys):
    path = write_config(small_config_dict(tmp_path))
    code, _ = run_cli(["run", str(path)], monkeypatch, capsys)
    assert code == 0
    run_dir = tmp_path / "runs" / "small"
    before = snapshot(run_dir)
    other = write_config(small_config_dict(tmp_path, train={"lr": 0.5}), "other.yaml")
    code, err = run_cli(["run", str(other), "--resume", str(run_dir)], monkeypatch, capsys)
    assert_one_line_error(code, err, "config differs", str(run_dir))
    assert snapshot(run_dir) == before


def test_resume_something_that_is_not_a_run(tmp_path, monkeypatch, capsys):
    code, err = run_cli(["run", "--resume", str(tmp_path)], monkeypatch, capsys)
    assert_one_line_error(code, err, "not a run directory")


@pytest.mark.skipif(os.geteuid() == 0 and sys.platform != "linux", reason="needs Linux")
def test_unwritable_run_directory(tmp_path, write_config, monkeypatch, capsys):
    # /proc refuses new directories even for root, unlike a chmod'ed folder.
    data = small_config_dict(tmp_path, output_dir="/proc/lifelong-runs")
    code, err = run_cli(["run", str(write_config(data))], monkeypatch, capsys)
    assert_one_line_error(code, err, "cannot write the run directory", "/proc/lifelong-runs")


def test_existing_run_directory_is_never_overwritten(tmp_path, write_config, monkeypatch, capsys):
    path = write_config(small_config_dict(tmp_path))
    run_cli(["run", str(path)], monkeypatch, capsys)
    first = tmp_path / "runs" / "small"
    before = snapshot(first)
    run_cli(["run", str(path)], monkeypatch, capsys)
    assert (tmp_path / "runs" / "small-2" / "matrix.json").is_file()
    assert snapshot(first) == before


def test_bad_set_override(monkeypatch, capsys):
    code, err = run_cli(["run", "toy_naive", "--set", "nonsense"], monkeypatch, capsys)
    assert_one_line_error(code, err, "--set expects key=value")


def test_two_adapter_methods(tmp_path, write_config, monkeypatch, capsys):
    path = write_config(small_config_dict(tmp_path, methods=["lora", "lora_per_task"]))
    code, err = run_cli(["run", str(path)], monkeypatch, capsys)
    assert_one_line_error(code, err, "methods", "lora and lora_per_task both add weights")
    assert not (tmp_path / "runs").exists()  # refused before any run directory or model


def test_adapter_methods_mixed(tmp_path, write_config, monkeypatch, capsys):
    path = write_config(small_config_dict(tmp_path, methods=["self_replay", "olora", "mole"]))
    code, err = run_cli(["run", str(path)], monkeypatch, capsys)
    assert_one_line_error(code, err, "methods", "olora and mole both add weights")


# ------------------------------------------------------------------ data sources of the built-in streams


@pytest.fixture
def sword_root(tmp_path, monkeypatch):
    """The SWORD module directory moved to an empty tmp dir (its parsed Bibles forgotten)."""
    from lifelong.data.sources import sword

    root = tmp_path / "ztext"
    root.mkdir()
    monkeypatch.setattr(sword, "SWORD_ROOT", root)
    sword._read_bible.cache_clear()
    yield root
    sword._read_bible.cache_clear()


def test_a_missing_data_package_names_it(tmp_path, sword_root, monkeypatch, capsys):
    args = ["run", "--stream", "language", "--output-dir", str(tmp_path / "runs")]
    code, err = run_cli(args, monkeypatch, capsys)
    assert_one_line_error(code, err, "sword-text-kjv", "apt-get install")
    assert not list((tmp_path / "runs").iterdir())  # a run that could not start leaves no directory


def test_a_corrupt_data_file_names_it(tmp_path, sword_root, monkeypatch, capsys):
    from tests.test_sources import KJV_FIXTURE, write_ztext

    module = write_ztext(sword_root / "engKJV2006eb", KJV_FIXTURE)
    data = bytearray((module / "ot.bzz").read_bytes())
    data[2:6] = b"\xff\x00\xff\x00"
    (module / "ot.bzz").write_bytes(bytes(data))
    args = ["run", "--stream", "language", "--output-dir", str(tmp_path / "runs")]
    code, err = run_cli(args, monkeypatch, capsys)
    assert_one_line_error(code, err, "ot.bzz", "corrupt")


def test_an_empty_corpus_is_named(tmp_path, monkeypatch, capsys):
    from lifelong.data import sources

    monkeypatch.setitem(sources.CORPORA, "kjv", (lambda: [], "an emptied corpus"))
    args = ["run", "--stream", "domains", "--output-dir", str(tmp_path / "runs")]
    code, err = run_cli(args, monkeypatch, capsys)
    assert_one_line_error(code, err, "corpus 'kjv' is empty")
