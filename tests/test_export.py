"""`lifelong export`: a run's model as a plain transformers directory that a new run starts from."""

from __future__ import annotations

import json

import torch
from transformers import AutoModelForCausalLM

from lifelong.config import parse_config
from lifelong.export import export_run, restored
from lifelong.models.cache import describe, list_cached
from lifelong.rundir import RunDir
from lifelong.train import run
from tests.conftest import small_config_dict
from tests.test_cli_errors import assert_one_line_error, run_cli


def finished(tmp_path, **changes):
    return run(parse_config(small_config_dict(tmp_path, **changes)), show_progress=False)


def last_row(result) -> list[float]:
    return json.loads((result.path / "matrix.json").read_text())["rows"][-1]


def initial_row(result) -> list[float]:
    return json.loads((result.path / "matrix.json").read_text())["baseline"]


def same_logits(exported, source, changes) -> None:
    """The exported model's logits are the run's own model's (restored as the run built it)."""
    saved = parse_config(small_config_dict(source.path.parent.parent, **changes))
    unmerged, _, _ = restored(saved, RunDir(source.path), RunDir(source.path).latest_checkpoint())
    ids = torch.arange(1, 12).unsqueeze(0)  # (1, 11)
    with torch.no_grad():
        torch.testing.assert_close(exported(ids).logits, unmerged(input_ids=ids).logits, atol=1e-5, rtol=1e-5)


def test_a_run_from_the_exported_model_starts_where_the_run_ended(tmp_path):
    source = finished(tmp_path)
    dest = export_run(source.path, to=tmp_path / "exported")
    assert (dest / "model.safetensors").is_file() and (dest / "tokenizer.json").is_file()
    info = json.loads((dest / "export.json").read_text())
    assert info["checkpoint"] == "after-task-002" and info["tasks_done"] == 2
    again = finished(tmp_path, name="again", model={"path": str(dest), "preset": None, "overrides": {}})
    assert initial_row(again) == last_row(source)
    same_logits(AutoModelForCausalLM.from_pretrained(dest), source, {})


def test_lora_is_merged_into_plain_weights_that_give_the_same_logits(tmp_path):
    source = finished(tmp_path, methods=[{"name": "lora", "r": 4}])
    dest = export_run(source.path, to=tmp_path / "exported")
    model = AutoModelForCausalLM.from_pretrained(dest)
    assert not any("lora" in name for name, _ in model.named_parameters())
    again = finished(tmp_path, name="again", model={"path": str(dest), "preset": None, "overrides": {}})
    assert initial_row(again) == last_row(source)
    same_logits(model, source, {"methods": [{"name": "lora", "r": 4}]})


def test_export_into_the_cache_is_listed_and_usable_as_a_base(tmp_path, monkeypatch, capsys):
    source = finished(tmp_path)
    cache = tmp_path / "cache"
    code, _ = run_cli(
        ["export", str(source.path), "--name", "mine", "--cache-dir", str(cache)], monkeypatch, capsys
    )
    assert code == 0
    (listed,) = list_cached(cache)
    assert listed.name == "mine" and "exported from run" in describe(listed)


def test_a_method_outside_plain_weights_is_refused_in_one_line(tmp_path, monkeypatch, capsys):
    source = finished(tmp_path, methods=[{"name": "lora_per_task", "r": 4}])
    code, err = run_cli(["export", str(source.path), "--to", str(tmp_path / "x")], monkeypatch, capsys)
    assert_one_line_error(code, err, "lora_per_task", "cannot be exported")
    assert not (tmp_path / "x").exists()


def test_bad_destinations_are_one_line_errors(tmp_path, monkeypatch, capsys):
    source = finished(tmp_path)
    code, err = run_cli(["export", str(source.path)], monkeypatch, capsys)
    assert_one_line_error(code, err, "--name", "--to")
    code, err = run_cli(["export", str(tmp_path), "--to", str(tmp_path / "x")], monkeypatch, capsys)
    assert_one_line_error(code, err, "not a run directory")
    code, err = run_cli(["export", str(source.path), "--to", str(source.path)], monkeypatch, capsys)
    assert_one_line_error(code, err, "exists already")


def test_a_full_disk_is_one_line_and_leaves_nothing_half_written(tmp_path, monkeypatch, capsys):
    import errno

    from transformers import PreTrainedModel

    source = finished(tmp_path)

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", full)
    out = tmp_path / "out"
    out.mkdir()
    code, err = run_cli(["export", str(source.path), "--to", str(out / "model")], monkeypatch, capsys)
    assert_one_line_error(code, err, "could not write", "No space left on device")
    assert list(out.iterdir()) == []  # neither the model nor its temporary directory
