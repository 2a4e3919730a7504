"""A user's mistake gives one line naming the problem and exit code 2; no run directory is damaged."""

from __future__ import annotations

import json
import os
import shutil
import sys

import pytest
import yaml

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
    stream = {**custom_task(examples=[{"prompt": long_prompt, "target": "y"}]), "overlong": "error"}
    data = small_config_dict(tmp_path, stream=stream)
    code, err = run_cli(["run", str(write_config(data))], monkeypatch, capsys)
    assert_one_line_error(code, err, "qa", "longer than the limit of 16 tokens")


def test_sequence_longer_than_context_is_clipped_with_a_warning(tmp_path, write_config, monkeypatch, capsys):
    long_prompt = "x" * 100
    data = small_config_dict(
        tmp_path, stream=custom_task(examples=[{"prompt": long_prompt, "target": "y"}] * 2)
    )
    code, err = run_cli(["run", str(write_config(data))], monkeypatch, capsys)
    assert code == 0, err
    assert "warning: task 'qa': 2 train rows clipped to fit the limit of 16 tokens (overlong: clip)" in err


@pytest.mark.parametrize("missing", ["rejected", "chosen"])
def test_preference_row_missing_an_answer(tmp_path, write_config, monkeypatch, capsys, missing):
    rows = [{"prompt": "a", "chosen": "b", "rejected": "c"} for _ in range(3)]
    del rows[2][missing]
    task = {"name": "prefs", "kind": "preference", "train": {"file": str(tmp_path / "prefs.jsonl")}}
    (tmp_path / "prefs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = small_config_dict(tmp_path, stream={"tasks": [task]})
    code, err = run_cli(["run", str(write_config(data))], monkeypatch, capsys)
    assert_one_line_error(code, err, "task 'prefs' train row 2", f"no field {missing!r}")
    assert not list((tmp_path / "runs").glob("*"))


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


# ------------------------------------------------------------------ config files that are not configs


@pytest.mark.parametrize("text", ["", "# only a comment\n\n"])
def test_an_empty_config_is_refused(tmp_path, monkeypatch, capsys, text):
    path = tmp_path / "empty.yaml"
    path.write_text(text)
    monkeypatch.chdir(tmp_path)
    code, err = run_cli(["run", str(path)], monkeypatch, capsys)
    assert_one_line_error(code, err, "empty.yaml", "is empty")
    assert not (tmp_path / "runs").exists()  # no default run started


def test_a_binary_config_is_named(tmp_path, monkeypatch, capsys):
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"\xff\xfe\x00\x81 not text")
    code, err = run_cli(["run", str(path)], monkeypatch, capsys)
    assert_one_line_error(code, err, "binary.yaml", "not UTF-8")


def test_jobs_zero(monkeypatch, capsys):
    code, err = run_cli(["run", "--jobs", "0"], monkeypatch, capsys)
    assert_one_line_error(code, err, "--jobs", "greater than or equal to 1")


def test_an_unknown_command(monkeypatch, capsys):
    code, err = run_cli(["rnu"], monkeypatch, capsys)
    assert_one_line_error(code, err, "rnu")


@pytest.mark.parametrize(
    "stream",
    [
        {"builtin": "toy", "tasks": []},
        {"builtin": "toy", "options": {"tasks": []}},
        {"tasks": []},
    ],
)
def test_a_builtin_stream_without_tasks_is_refused(tmp_path, write_config, monkeypatch, capsys, stream):
    path = write_config(small_config_dict(tmp_path, stream=stream))
    code, err = run_cli(["run", str(path)], monkeypatch, capsys)
    assert_one_line_error(code, err, "tasks")


def test_compare_names_a_misspelt_run_directory(tmp_path, monkeypatch, capsys):
    (tmp_path / "runs").mkdir()
    code, err = run_cli(["compare", str(tmp_path / "runs" / "smal")], monkeypatch, capsys)
    assert_one_line_error(code, err, "run directory", "smal", "not found")


# ------------------------------------------------------------------ models that are not there


@pytest.mark.parametrize(
    "path", ["models/my-llama", "./my-llama", "/no/such/model", "~/no-such-lifelong-model"]
)
def test_a_mistyped_local_model_path_fails_at_once(tmp_path, write_config, monkeypatch, capsys, path):
    import time

    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # it must not matter: the hub is never asked
    config = write_config(small_config_dict(tmp_path, model={"preset": None, "path": path}))
    start = time.perf_counter()
    code, err = run_cli(["run", str(config)], monkeypatch, capsys)
    assert_one_line_error(code, err, repr(path), "does not exist")
    assert time.perf_counter() - start < 10
    assert not list((tmp_path / "runs").iterdir())


def test_hub_ids_are_not_taken_for_local_paths(tmp_path, monkeypatch):
    from lifelong.paths import looks_local

    monkeypatch.chdir(tmp_path)
    assert not looks_local("gpt2")
    assert not looks_local("HuggingFaceTB/SmolLM2-135M")
    assert looks_local("a/b/c")
    (tmp_path / "HuggingFaceTB").mkdir()  # the first part exists here: a mistyped local path
    assert looks_local("HuggingFaceTB/SmolLM2-135M")


def save_tiny_pretrained(folder):
    from lifelong.models import build_preset, build_tokenizer

    tokenizer = build_tokenizer(None, [])
    overrides = {"hidden_size": 16, "intermediate_size": 32, "num_heads": 2, "num_layers": 1}
    build_preset("tiny", len(tokenizer), 16, overrides).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder / "model.safetensors"


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_a_corrupt_local_model_names_the_file(tmp_path, write_config, monkeypatch, capsys):
    weights = save_tiny_pretrained(tmp_path / "my-model")
    truncate(weights)
    capsys.readouterr()  # transformers' notes while saving the model
    config = write_config(small_config_dict(tmp_path, model={"preset": None, "path": str(weights.parent)}))
    code, err = run_cli(["run", str(config)], monkeypatch, capsys)
    assert_one_line_error(code, err, str(weights), "corrupt or truncated")
    assert not list((tmp_path / "runs").iterdir())


# ------------------------------------------------------------------ resume: --set, finished runs, bad files


def finished_run(tmp_path, write_config, monkeypatch, capsys):
    code, err = run_cli(["run", str(write_config(small_config_dict(tmp_path)))], monkeypatch, capsys)
    assert code == 0, err
    return tmp_path / "runs" / "small"


def forget_results(run_dir):
    """A finished run as it was before it wrote its results (killed after its last checkpoint)."""
    for name in ("summary.json", "matrix.json", "matrix.csv", "curves.png"):
        (run_dir / name).unlink()


def forget_last_task(run_dir):
    """A finished run as if killed during its last task: results and the last checkpoint gone."""
    forget_results(run_dir)
    ckpts = sorted(p for p in (run_dir / "checkpoints").iterdir() if p.is_dir())
    shutil.rmtree(ckpts[-1])
    (run_dir / "checkpoints" / "latest").write_text(ckpts[-2].name + "\n")


def test_set_on_resume_that_changes_the_numbers_is_refused(tmp_path, write_config, monkeypatch, capsys):
    run_dir = finished_run(tmp_path, write_config, monkeypatch, capsys)
    forget_last_task(run_dir)
    before = snapshot(run_dir)
    code, err = run_cli(["run", "--resume", str(run_dir), "--set", "train.lr=0.01"], monkeypatch, capsys)
    assert_one_line_error(code, err, "config differs", "train.lr", str(run_dir))
    assert snapshot(run_dir) == before


def test_set_on_resume_of_a_resumable_field_is_applied(tmp_path, write_config, monkeypatch, capsys):
    run_dir = finished_run(tmp_path, write_config, monkeypatch, capsys)
    forget_last_task(run_dir)
    args = ["run", "--resume", str(run_dir), "--set", "train.keep_checkpoints=5"]
    code, err = run_cli(args, monkeypatch, capsys)
    assert code == 0, err
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["keep_checkpoints"] == 5
    assert (run_dir / "summary.json").is_file()


def test_resume_of_a_finished_run_leaves_its_files_unchanged(tmp_path, write_config, monkeypatch, capsys):
    run_dir = finished_run(tmp_path, write_config, monkeypatch, capsys)
    before = snapshot(run_dir)
    monkeypatch.setattr(sys, "argv", ["lifelong", "run", "--resume", str(run_dir)])
    main()
    assert "is finished" in capsys.readouterr().out
    assert snapshot(run_dir) == before


def test_a_broken_config_of_a_resumed_run_is_named(tmp_path, write_config, monkeypatch, capsys):
    run_dir = finished_run(tmp_path, write_config, monkeypatch, capsys)
    forget_results(run_dir)
    (run_dir / "config.yaml").write_text("train: [1\nseed: 0\n")
    code, err = run_cli(["run", "--resume", str(run_dir)], monkeypatch, capsys)
    assert_one_line_error(code, err, "config.yaml", "malformed YAML")


def test_an_unreadable_checkpoint_falls_back_to_the_previous_one(tmp_path, write_config, monkeypatch, capsys):
    run_dir = finished_run(tmp_path, write_config, monkeypatch, capsys)
    matrix = json.loads((run_dir / "matrix.json").read_text())["rows"]
    forget_results(run_dir)
    newest = run_dir / "checkpoints" / (run_dir / "checkpoints" / "latest").read_text().strip()
    truncate(newest / "model.safetensors")
    code, err = run_cli(["run", "--resume", str(run_dir)], monkeypatch, capsys)
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.strip()]
    assert len(warnings) == 1 and warnings[0].startswith("warning:"), err
    assert str(newest / "model.safetensors") in warnings[0] and "previous checkpoint" in warnings[0]
    # the last task trained again from the checkpoint before: the same numbers as the first time
    assert json.loads((run_dir / "matrix.json").read_text())["rows"] == matrix


def test_a_truncated_only_checkpoint_is_named(tmp_path, write_config, monkeypatch, capsys):
    run_dir = finished_run(tmp_path, write_config, monkeypatch, capsys)
    forget_last_task(run_dir)
    only = run_dir / "checkpoints" / (run_dir / "checkpoints" / "latest").read_text().strip()
    truncate(only / "model.safetensors")
    code, err = run_cli(["run", "--resume", str(run_dir)], monkeypatch, capsys)
    assert_one_line_error(code, err, str(only / "model.safetensors"), "corrupt or truncated")


@pytest.mark.parametrize("failing_save", [1, 2])
def test_a_full_disk_during_a_checkpoint(tmp_path, write_config, monkeypatch, capsys, failing_save):
    import errno

    from lifelong import rundir

    saves = []

    def save_until_full(model, filename, *args, **kwargs):
        saves.append(filename)
        if len(saves) == failing_save:
            with open(filename, "wb") as f:
                f.write(b"half a file")  # what a full disk leaves behind
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(model, filename, *args, **kwargs)

    real_save = rundir.save_model
    monkeypatch.setattr(rundir, "save_model", save_until_full)
    code, err = run_cli(["run", str(write_config(small_config_dict(tmp_path)))], monkeypatch, capsys)
    kept = "no earlier checkpoint" if failing_save == 1 else "after-task-001 is kept"
    assert_one_line_error(code, err, "cannot write checkpoint", "No space left on device", kept)
    run_dir = tmp_path / "runs" / "small"
    assert not list(run_dir.glob(".ckpt-*"))  # the half-written checkpoint is removed
    assert not list(run_dir.rglob(".*.*"))  # nor any temporary file of an atomic write


@pytest.mark.parametrize("value", ["[1", "2021-13-01"])
def test_a_set_value_that_is_not_yaml(monkeypatch, capsys, value):
    code, err = run_cli(["run", "toy_naive", "--set", f"train.lr={value}"], monkeypatch, capsys)
    assert_one_line_error(code, err, "malformed YAML", f"--set train.lr={value}")
