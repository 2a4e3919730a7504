"""Runs on a pretrained base (a tiny model saved to a directory stands in for one): checkpoints hold
only what trains and resume to the same numbers, task-token rows train under LoRA, and the same
losses with gradient checkpointing; self-replay's samples are written to the run directory."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

import lifelong
from lifelong.config import parse_config
from lifelong.errors import UserError
from lifelong.models import build_preset, build_tokenizer
from lifelong.rundir import RunDir
from lifelong.train import Trainer
from tests.conftest import small_config_dict


def save_base(folder, seed: int = 0, bos: bool = False):
    """A tiny byte-level Llama saved as a Hugging Face directory: its vocabulary lacks the task tokens
    (with `bos`, its tokenizer has a bos token, as most pretrained ones do)."""
    torch.manual_seed(seed)
    tokenizer = build_tokenizer(None, [])
    if bos:
        tokenizer.add_special_tokens({"bos_token": "<s>"})
    overrides = {"hidden_size": 16, "intermediate_size": 32, "num_heads": 2, "num_layers": 1}
    build_preset("tiny", len(tokenizer), 32, overrides).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def pretrained_config(tmp_path, base, methods, name="run", **train):
    data = small_config_dict(
        tmp_path, name=name, methods=methods, train={"steps_per_task": 4, "checkpoint_every": 2, **train}
    )
    data["model"] = {"path": str(base)}
    return parse_config(data)


def read_log(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_lora_checkpoint_holds_only_what_trains_and_resumes_the_same(tmp_path):
    base = save_base(tmp_path / "base")
    whole = lifelong.run(pretrained_config(tmp_path, base, ["lora"]), show_progress=False)
    ckpt = whole.path / "checkpoints" / "after-task-001"
    assert not (ckpt / "model.safetensors").exists()
    held = load_file(str(ckpt / "trained.safetensors"))
    assert all("lora_" in k or "trainable_tokens_delta" in k for k in held), sorted(held)
    rows = "model.embed_tokens.trainable_tokens_delta.task_tokens"
    assert any("lora_A" in k for k in held) and held[rows].shape == (2, 16)  # the 2 task tokens' rows
    assert json.loads((ckpt / "base.json").read_text())["source"] == str(base)
    base_bytes = (base / "model.safetensors").stat().st_size
    assert not (ckpt / "optimizer.safetensors").exists()  # the next task starts a fresh AdamW anyway
    assert (ckpt / "trained.safetensors").stat().st_size < base_bytes / 2

    # stopped in the middle of task 2: its end checkpoint and the results gone
    matrix, losses = whole.progress.matrix, [r["loss"] for r in read_log(whole.path / "train_log.jsonl")]
    shutil.rmtree(whole.path / "checkpoints" / "after-task-002")
    (whole.path / "checkpoints" / "latest").write_text("task-002-step-0000002\n")
    for name in ("summary.json", "matrix.json", "matrix.csv", "curves.png"):
        (whole.path / name).unlink()
    resumed = lifelong.resume(whole.path, show_progress=False)
    assert resumed.progress.matrix == matrix
    assert [r["loss"] for r in read_log(whole.path / "train_log.jsonl")] == losses


def test_a_teacher_over_a_frozen_base_is_saved_as_its_adapters_and_resumes_the_same(tmp_path):
    base = save_base(tmp_path / "base")
    methods = [{"name": "self_replay", "loss": "kl", "refresh_every": 2}, "lora"]
    whole = lifelong.run(pretrained_config(tmp_path, base, methods), show_progress=False)
    mid = whole.path / "checkpoints" / "task-002-step-0000002"  # task 2 has a teacher
    teacher = [k for k in load_file(str(mid / "method-0.safetensors")) if k.startswith("teacher.")]
    assert teacher and all("lora_" in k or "trainable_tokens" in k for k in teacher), teacher
    losses = [r["loss"] for r in read_log(whole.path / "train_log.jsonl")]
    shutil.rmtree(whole.path / "checkpoints" / "after-task-002")
    (whole.path / "checkpoints" / "latest").write_text(f"{mid.name}\n")
    for name in ("summary.json", "matrix.json", "matrix.csv", "curves.png"):
        (whole.path / name).unlink()
    resumed = lifelong.resume(whole.path, show_progress=False)
    assert resumed.progress.matrix == whole.progress.matrix
    assert [r["loss"] for r in read_log(whole.path / "train_log.jsonl")] == losses


def test_resume_refuses_a_changed_base(tmp_path):
    base = save_base(tmp_path / "base")
    result = lifelong.run(pretrained_config(tmp_path, base, ["lora"]), show_progress=False)
    shutil.rmtree(result.path / "checkpoints" / "after-task-002")
    (result.path / "checkpoints" / "latest").write_text("after-task-001\n")
    (result.path / "summary.json").unlink()
    save_base(base, seed=1)  # other weights under the same path
    with pytest.raises(UserError, match="base model changed since checkpoint after-task-001") as err:
        lifelong.resume(result.path, show_progress=False)
    assert "\n" not in str(err.value)


def test_full_fine_tuning_on_a_pretrained_base_saves_every_weight(tmp_path):
    base = save_base(tmp_path / "base")
    result = lifelong.run(pretrained_config(tmp_path, base, ["naive"], steps_per_task=2), show_progress=False)
    held = load_file(str(result.path / "checkpoints" / "after-task-001" / "trained.safetensors"))
    assert set(load_file(str(base / "model.safetensors"))) <= set(held)
    assert result.progress.trained_base and "model.embed_tokens.weight" in result.progress.trained_base


def test_task_token_rows_train_under_lora_and_no_other_row(tmp_path):
    base = save_base(tmp_path / "base")
    cfg = pretrained_config(tmp_path, base, ["lora"], weight_decay=0.5)  # decay would move idle rows
    trainer = Trainer(cfg, RunDir.create(cfg), show_progress=False)
    embedding, head = trainer.raw.get_input_embeddings(), trainer.raw.get_output_embeddings()
    every = torch.arange(len(trainer.tokenizer))
    hidden = torch.eye(16)  # (16, 16): the head's output rows, read through unit vectors
    with torch.no_grad():
        before, before_head = embedding(every).clone(), head(hidden).clone()  # (V, 16), (16, V)
    new = [trainer.tokenizer.convert_tokens_to_ids(t) for t in ("<reverse>", "<add>")]
    trainer.run()
    with torch.no_grad():
        changed = (embedding(every) != before).any(dim=1)  # (V,)
        head_changed = (head(hidden) != before_head).any(dim=0)  # (V,)
    assert sorted(changed.nonzero().flatten().tolist()) == sorted(new)
    assert torch.equal(head_changed, changed)  # the tied output rows follow
    assert not embedding.base_layer.weight.requires_grad


@pytest.mark.parametrize("method", ["naive", "lora"])
def test_gradient_checkpointing_gives_the_same_losses(tmp_path, method):
    base = save_base(tmp_path / "base")
    losses, block_calls = {}, {}
    for on in (False, True):
        cfg = pretrained_config(tmp_path, base, [method], name=f"gc-{on}", gradient_checkpointing=on)
        trainer = Trainer(cfg, RunDir.create(cfg), show_progress=False)
        calls = []
        mlp = trainer.raw.model.layers[0].mlp
        forward = mlp.forward  # wrapped, not hooked: the recompute runs no module hooks

        def counted(*args, forward=forward, calls=calls, **kwargs):
            calls.append(torch.is_grad_enabled())
            return forward(*args, **kwargs)

        mlp.forward = counted
        result = trainer.run()
        losses[on] = [r["loss"] for r in read_log(result.path / "train_log.jsonl")]
        block_calls[on] = sum(calls)  # forwards with grad inside the block: twice when recomputed
    assert losses[True] == pytest.approx(losses[False], rel=1e-4, abs=1e-5)
    assert block_calls[True] == 2 * block_calls[False] > 0


def test_self_replay_writes_its_samples(small_config):
    cfg = small_config(methods=[{"name": "self_replay", "refresh_every": 2}])
    result = lifelong.run(cfg, show_progress=False)
    records = read_log(result.path / "samples.jsonl")
    assert [r["global_step"] for r in records] == [7, 9, 11]  # task 2 (steps 7-12), every 2 steps
    assert [r["step"] for r in records] == [0, 2, 4]
    for record in records:
        assert record["training"] == "add"
        assert 1 <= len(record["rows"]) <= 8
        assert all(row["task"] == "reverse" and row["text"].startswith("<reverse>") for row in record["rows"])


def test_samples_of_the_base_model_are_named_base(tmp_path):
    base = save_base(tmp_path / "base", bos=True)
    methods = [{"name": "self_replay", "refresh_every": 3, "include_base": True}]
    cfg = pretrained_config(tmp_path, base, methods, steps_per_task=6, checkpoint_every=6)
    records = read_log(lifelong.run(cfg, show_progress=False).path / "samples.jsonl")
    assert records[0]["training"] == "reverse"  # the first task: the base alone is replayed
    assert {row["task"] for row in records[0]["rows"]} == {"base"}
    later = {row["task"] for r in records if r["training"] == "add" for row in r["rows"]}
    assert later == {"base", "reverse"}


@pytest.mark.parametrize(
    "method",
    ["lora_per_task", "olora", "mole", "prompt_tuning", "prefix_tuning", "adapters", "expand"],
)
def test_task_token_rows_train_under_every_frozen_base_method(tmp_path, method):
    base = save_base(tmp_path / "base")
    cfg = pretrained_config(tmp_path, base, [method], steps_per_task=1, checkpoint_every=None)
    trainer = Trainer(cfg, RunDir.create(cfg), show_progress=False)
    embedding = trainer.raw.get_input_embeddings()
    every = torch.arange(len(trainer.tokenizer))
    with torch.no_grad():
        before = embedding(every).clone()  # (V, 16)
    new = sorted(trainer.tokenizer.convert_tokens_to_ids(t) for t in ("<reverse>", "<add>"))
    trainer.run()
    with torch.no_grad():
        changed = (embedding(every) != before).any(dim=1)  # (V,)
    assert changed.nonzero().flatten().tolist() == new


def test_self_replay_with_lora_on_a_pretrained_base_prompts_with_trained_task_tokens(tmp_path):
    base = save_base(tmp_path / "base")
    methods = [{"name": "self_replay", "refresh_every": 1}, "lora"]
    result = lifelong.run(pretrained_config(tmp_path, base, methods, steps_per_task=2), show_progress=False)
    records = read_log(result.path / "samples.jsonl")
    assert [r["step"] for r in records] == [0, 1]
    assert all(row["text"].startswith("<reverse>") for r in records for row in r["rows"])
