"""Adapter methods on stock PEFT do what they claim: the base (and earlier adapters) stay bit-identical,
routed inference scores task i with adapter i, O-LoRA's overlap falls, MoLE's router mixes and learns,
per-task adapters forget less than naive, self-replay and LAMOL write each earlier task with its own
adapter, a killed run resumes to the same numbers, and incompatible method lists are refused before
any model loads."""

from __future__ import annotations

import json
from contextlib import nullcontext

import pytest
import torch
from safetensors.torch import load_file

import lifelong
import lifelong.methods.self_replay as self_replay_module
from lifelong.config import parse_config
from lifelong.data.batching import encode_stream
from lifelong.data.toy import toy_stream
from lifelong.errors import UserError
from lifelong.evaluate import Scored, evaluate_stream
from lifelong.losses import next_token_loss
from lifelong.methods import Forward, MethodContext, build_method
from lifelong.methods.base import Compatibility, check_compatible
from lifelong.methods.lamol import LamolConfig
from lifelong.methods.lora_per_task import LoraPerTaskConfig
from lifelong.methods.mole import MoleConfig
from lifelong.methods.replay import replay_loss
from lifelong.methods.self_replay import SelfReplayConfig, samples_batch, teacher_logits_by_position
from lifelong.models import build_preset, build_tokenizer
from lifelong.rundir import RunDir
from lifelong.sampling import generate
from lifelong.train import Trainer
from tests.conftest import killed_copy, small_config_dict
from tests.test_methods import MODEL, STREAM, TRAIN, fgt, run_method
from tests.test_methods_architecture import composed, nudge


def trainer_for(tmp_path, methods, **changes) -> Trainer:
    cfg = parse_config(small_config_dict(tmp_path, methods=methods, **changes))
    return Trainer(cfg, RunDir.create(cfg), show_progress=False)


def is_adapter(name: str) -> bool:
    return ".lora_" in name or name.startswith("mole_router.")


@pytest.mark.parametrize(
    "methods",
    [["lora"], ["lora_per_task"], [{"name": "self_replay", "loss": "kl"}, "lora"]],
    ids=["lora", "lora_per_task", "self_replay+lora"],
)
def test_adapters_leave_the_base_weights_bit_identical(tmp_path, methods):
    trainer = trainer_for(tmp_path, methods)
    before = {n: p.detach().clone() for n, p in trainer.raw.named_parameters()}
    trainer.run()
    after = dict(trainer.raw.named_parameters())
    base = [n for n in before if not is_adapter(n)]
    assert base and all(torch.equal(before[n], after[n]) for n in base)
    assert any(not torch.equal(before[n], after[n]) for n in before if is_adapter(n))  # adapters trained
    summary = json.loads((trainer.run_dir.path / "summary.json").read_text())
    one_adapter = sum(p.numel() for n, p in after.items() if ".task_0." in n or ".lora." in n)
    assert summary["trainable_params"] == one_adapter  # A and B of the adapter being trained
    assert summary["total_params"] == sum(p.numel() for p in after.values())


def test_lora_per_task_leaves_earlier_adapters_unchanged(tmp_path):
    trainer = trainer_for(tmp_path, ["lora_per_task"], train={"reset_optimizer": False})
    trainer.run()
    after_first = load_file(str(trainer.run_dir.ckpt_dir / "after-task-001" / "model.safetensors"))
    final = dict(trainer.raw.named_parameters())
    task_0 = [n for n in final if ".task_0." in n]
    assert task_0 and all(torch.equal(after_first[n], final[n]) for n in task_0)
    task_1_B = [n for n in final if ".lora_B.task_1." in n]
    assert all(not after_first[n].any() for n in task_1_B)  # untouched during task 1 (B starts at 0)
    assert all(final[n].any() for n in task_1_B)  # trained during task 2
    # the optimizer holds only the current adapter, rebuilt although reset_optimizer is false
    held = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert held == {id(p) for n, p in final.items() if ".task_1." in n}


def tiny_setup(method_cfg, tasks=("add", "reverse")):
    stream = toy_stream(tasks=list(tasks), n_digits=1, n_eval=10, seed=0)
    tok = build_tokenizer(stream.vocabulary, [t.token for t in stream.tasks])
    data = encode_stream(stream, tok, 16)
    torch.manual_seed(0)
    model = build_preset("tiny", len(tok), 16, {"hidden_size": 32, "num_layers": 1, "num_heads": 2})
    method = build_method(method_cfg)
    ctx = MethodContext(data, tok, torch.device("cpu"), 0, 8, 16, "sequence")
    return method, method.setup(model, ctx), data


def test_routed_inference_scores_task_i_with_adapter_i(monkeypatch):
    method, model, data = tiny_setup(LoraPerTaskConfig())
    method.before_task(1, model)
    for layer in method.adapters.layers:  # adapter 1 "trained", adapter 0 still zero
        torch.nn.init.normal_(layer.lora_B["task_1"].weight)
    ids = data.tasks[0].train.batch(torch.arange(4), "sequence").input_ids
    with torch.no_grad():
        with method.route(0, model):
            routed_0 = model(input_ids=ids).logits
        with method.route(1, model):
            routed_1 = model(input_ids=ids).logits
        with method.adapters.only([], model):
            base = model(input_ids=ids).logits
    assert torch.equal(routed_0, base) and not torch.allclose(routed_1, base)

    seen = []
    monkeypatch.setattr(
        "lifelong.evaluate.evaluate_task",
        lambda *args: seen.append([layer.active_adapters for layer in method.adapters.layers]) or Scored(0.0),
    )
    evaluate_stream(model, data, route=lambda i: method.route(i, model))
    assert seen == [[["task_0"]] * len(method.adapters.layers), [["task_1"]] * len(method.adapters.layers)]
    # leaving the route restores the training selection: task 1's adapter active and trainable
    assert all(layer.active_adapters == ["task_1"] for layer in method.adapters.layers)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".task_1." in n for n in trainable)


def test_self_replay_samples_and_distils_each_earlier_task_with_its_adapter(monkeypatch):
    """At task 3, the samples of tasks 1 and 2 are drawn by pi with their own adapters (task 1's rows,
    then task 2's, from the one generator), and pi's logits for the KL, kept from sampling or (too
    large to keep) from a teacher forward, are the routed ones too."""
    losses = {}
    for limit in (2**26, 0):  # 0: nothing is kept, the teacher runs a forward over the replay rows
        monkeypatch.setattr(self_replay_module, "MAX_CACHED_LOGITS", limit)
        (lpt, replay), model, data, added = composed(
            [LoraPerTaskConfig(), SelfReplayConfig(replay_fraction=0.5, refresh_every=2, loss="kl")],
            tasks=("add", "reverse", "sort"),
        )
        lpt.before_task(2, model)  # pi is copied with task 3's adapter selected
        nudge(added, scale=0.3)
        replay.before_task(2, model)
        pi, state = replay.teacher, replay.gen.get_state()
        replay_rows = replay.replay_batch(2, 0, model).trimmed()
        chunk = replay.chunk

        gen = torch.Generator().set_state(state)
        which = torch.randint(2, (len(chunk),), generator=gen).tolist()  # the prompts' tasks
        new = chunk.input_ids.shape[1] - 1
        tokens = torch.empty((len(chunk), new), dtype=torch.long)
        logits = torch.empty((len(chunk), new, model.config.vocab_size))
        for j in (0, 1):
            rows = [i for i, w in enumerate(which) if w == j]
            with lpt.route(j, pi):
                tokens[rows], logits[rows] = generate(
                    pi,
                    [data.tasks[j].prefix] * len(rows),
                    new,
                    data.pad_id,
                    greedy=False,
                    generator=gen,
                    return_logits=True,
                    stop_id=data.eos_id,  # a row ends at its eos and leaves the batch, as self_replay's
                    drop_finished=True,
                )
        prompts = [data.tasks[w].prefix for w in which]
        assert 0 < sum(which) < len(which)  # both earlier tasks
        assert torch.equal(
            chunk.input_ids, samples_batch(prompts, tokens, data.eos_id, data.pad_id).input_ids
        )
        if limit:
            assert torch.equal(replay.chunk_logits, teacher_logits_by_position(prompts, logits))

        out = model(input_ids=replay_rows.input_ids, attention_mask=replay_rows.attention_mask).logits
        view = Forward(replay_rows, out, *next_token_loss(out, replay_rows.input_ids, replay_rows.loss_mask))
        losses[limit] = replay.loss_terms(model, None, view)["kl"]
    torch.testing.assert_close(losses[2**26], losses[0], rtol=1e-4, atol=1e-6)
    unrouted = replay_loss("kl", view, pi)  # every row read with pi's task-3 adapter
    assert abs(unrouted.item() - losses[0].item()) > 1e-3


def test_lamol_writes_each_earlier_task_with_its_adapter():
    (lpt, lamol), model, data, added = composed(
        [LoraPerTaskConfig(), LamolConfig(samples_per_task=6)], tasks=("add", "reverse", "sort")
    )
    lpt.before_task(2, model)
    nudge(added, scale=0.3)
    state = lamol.gen.get_state()
    lamol.before_task(2, model)
    prompts = [data.tasks[j].prefix for j in (0, 1) for _ in range(6)]
    new = min(data.max_len, 16) - 1

    def by_hand(route):
        gen = torch.Generator().set_state(state)
        parts = []
        for j in (0, 1):
            with route(j):
                parts.append(
                    generate(
                        model,
                        prompts[6 * j : 6 * j + 6],
                        new,
                        data.pad_id,
                        greedy=False,
                        generator=gen,
                        stop_id=data.eos_id,
                    )
                )
        return samples_batch(prompts, torch.cat(parts), data.eos_id, data.pad_id).input_ids

    assert torch.equal(lamol.pool.input_ids, by_hand(lambda j: lpt.route(j, model)))
    assert not torch.equal(lamol.pool.input_ids, by_hand(lambda j: nullcontext()))  # task 3's adapter
    assert all(layer.active_adapters == ["task_2"] for layer in lpt.adapters.layers)  # restored


def test_olora_overlap_falls_during_training(tmp_path):
    train = {"steps_per_task": 40, "batch_size": 16, "lr": 3e-3, "eval_examples": 4}
    result = lifelong.run(
        parse_config(small_config_dict(tmp_path, methods=[{"name": "olora", "coef": 1.0}], train=train)),
        show_progress=False,
    )
    log = [json.loads(line) for line in (result.path / "train_log.jsonl").read_text().splitlines()]
    assert all("loss_olora.overlap" not in r for r in log if r["task"] == 0)  # no earlier adapter yet
    overlap = [r["loss_olora.overlap"] for r in log if r["task"] == 1]
    assert len(overlap) == 40 and overlap[0] > 0
    assert sum(overlap[-5:]) / 5 < 0.5 * overlap[0]


def test_mole_router_mixes_the_trained_experts_and_learns():
    method, model, data = tiny_setup(MoleConfig(), tasks=("add", "reverse", "sort"))
    method.before_task(1, model)
    for layer in method.adapters.layers:  # experts 0 and 1 with different (non-zero) updates
        for name in ("task_0", "task_1"):
            torch.nn.init.normal_(layer.lora_B[name].weight)
    batch = data.tasks[1].train.batch(torch.arange(6), "sequence")
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    for router in method.routers:
        weights = router.weights  # (B, T, 3)
        assert weights.shape[-1] == 3
        assert torch.allclose(weights.sum(-1), torch.ones(weights.shape[:-1]))
        assert not weights[..., 2].any()  # expert 3 (task not trained yet) gets no weight
    logits.float().logsumexp(-1).mean().backward()
    assert all(r.gate.weight.grad is not None and r.gate.weight.grad.abs().sum() > 0 for r in method.routers)
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is None for n, g in grads.items() if ".task_0." in n or not is_adapter(n))  # frozen
    assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if ".lora_B.task_1." in n)


def test_lora_per_task_forgets_less_than_naive(tmp_path_factory):
    naive = run_method(tmp_path_factory.mktemp("naive"), {"name": "naive"})
    routed = run_method(
        tmp_path_factory.mktemp("lpt"),
        {"name": "lora_per_task", "inference": "routed", "train_base_on_first_task": True},
    )
    assert routed.progress.matrix[0][0] >= 0.9 and routed.progress.matrix[1][1] >= 0.9  # learns both
    assert fgt(naive) >= 0.5
    assert fgt(routed) <= fgt(naive) - 0.5  # measured: 0.0 against 1.0
    assert STREAM["options"]["tasks"] == ["add", "reverse"] and MODEL and TRAIN  # the stream of test_methods


@pytest.mark.parametrize(
    "methods",
    [
        ["lora_per_task"],
        [{"name": "self_replay", "loss": "kl", "refresh_every": 3}, "lora"],
        [{"name": "self_replay", "loss": "kl", "refresh_every": 3}, "lora_per_task"],
    ],
    ids=["lora_per_task", "self_replay+lora", "self_replay+lora_per_task"],
)
@pytest.mark.parametrize("tag", ["after-task-001", "task-002-step-0000002"])
def test_resume_of_an_adapter_run_matches(tmp_path, methods, tag):
    train = {"checkpoint_every": 2, "reset_optimizer": False}
    whole = lifelong.run(parse_config(small_config_dict(tmp_path, methods=methods, train=train)), False)
    killed = killed_copy(whole.path, tag, tmp_path / "killed")  # a run killed right after `tag`
    resumed = lifelong.resume(killed, show_progress=False)
    assert resumed.progress.matrix == whole.progress.matrix
    losses = lambda p: [json.loads(x)["loss"] for x in (p / "train_log.jsonl").read_text().splitlines()]  # noqa: E731
    assert losses(killed) == losses(whole.path)


def test_incompatible_method_lists_are_refused():
    full, adapter = Compatibility(), Compatibility(kind="adapter")
    assert check_compatible([("self_replay", full), ("lora", adapter)]) is None
    assert "both add weights" in check_compatible([("lora", adapter), ("lora_per_task", adapter)])
    assert "both add weights" in check_compatible(
        [("expand", Compatibility(kind="expansion")), ("lora", adapter)]
    )
    rows = Compatibility(supplies_examples=True)
    assert "both replace the training rows" in check_compatible([("joint", rows), ("joint", rows)])
    assert check_compatible([("joint", rows), ("lora", adapter)]) is None
    with pytest.raises(UserError, match="methods lora and mole both add weights"):
        parse_config({"methods": ["lora", "mole"]})
