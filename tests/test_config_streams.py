"""A config of a built-in stream starts from the settings the stream suggests; the resolved config
records the context a run used."""

from __future__ import annotations

import json

import pytest
import yaml

from lifelong.config import builtin_configs, load_config, parse_config, stream_config
from lifelong.data import builtin_streams


@pytest.mark.parametrize("name", builtin_configs())
def test_builtin_configs_resolve_as_before(name):
    """The toy configs set everything the toy stream suggests: its suggestions change none of them."""
    from importlib import resources

    text = (resources.files("lifelong") / "configs" / f"{name}.yaml").read_text()
    assert load_config(name) == parse_config(yaml.safe_load(text))


def test_config_hashes_of_preset_configs_unchanged():
    """Runs started before max_length became optional resume: their config hashes are the same."""
    base = {"methods": ["naive"], "stream": {"builtin": "toy"}, "train": {"steps_per_task": 10}}
    assert parse_config(base).config_hash() == "6abfaaee5c73e17d"
    assert load_config("toy_naive").config_hash() == "60bd223e4ce3a260"


def test_a_yaml_of_a_builtin_stream_gets_its_suggested_model_and_train(write_config):
    ner = builtin_streams()["ner"]
    cfg = load_config(write_config({"stream": {"builtin": "ner"}, "train": {"lr": 0.01}}))
    assert cfg.model == parse_config({"model": ner.model}).model and cfg.model.base == "en-tiny"
    assert cfg.train.lr == 0.01  # the YAML's own key wins
    for key, value in ner.train.items():
        if key != "lr":
            assert getattr(cfg.train, key) == value, key
    assert load_config(write_config({"stream": "ner"})).train == stream_config("ner").train
    # the same settings as `lifelong run --stream ner`
    assert (cfg.model, cfg.train.steps_per_task) == (stream_config("ner").model, ner.train["steps_per_task"])


def test_a_yaml_that_names_its_model_keeps_it(write_config, tmp_path):
    cfg = load_config(write_config({"stream": "ner", "model": {"path": str(tmp_path)}}))
    assert cfg.model.path == str(tmp_path) and cfg.model.base is None and cfg.model.preset is None
    partial = load_config(write_config({"stream": "toy", "model": {"dtype": "bfloat16"}}))
    assert (partial.model.preset, partial.model.max_length, partial.model.dtype) == ("tiny", 16, "bfloat16")
    # --set counts as the config's own: a path given on the command line replaces the suggested base
    assert stream_config("ner", overrides={"model.path": str(tmp_path)}).model.base is None
    # a config without a stream key, or of a custom stream, gets nothing
    assert load_config(write_config({"train": {"lr": 0.5}})).train.warmup_steps == 0


def test_max_length_is_a_preset_setting_only(tmp_path):
    from lifelong.rundir import config_yaml

    assert parse_config({}).model.max_length == 64
    assert parse_config({"model": {"max_length": 16}}).model.max_length == 16
    pretrained = parse_config({"model": {"path": str(tmp_path), "max_length": 64}})
    assert pretrained.model.max_length is None
    saved = yaml.safe_load(config_yaml(pretrained))
    assert "max_length" not in saved["model"]
    assert parse_config(saved) == pretrained
    assert yaml.safe_load(config_yaml(parse_config({})))["model"]["max_length"] == 64


def test_summary_records_the_context_used(small_config):
    from lifelong.train import run

    path = run(small_config(), show_progress=False).path
    assert json.loads((path / "summary.json").read_text())["context_length"] == 16
