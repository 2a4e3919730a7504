"""Preference tasks: the DPO loss against hand-computed values and trl's, pair encoding, loading
(a row missing a field fails in one line), reference log-probs and the preference-accuracy score."""

from __future__ import annotations

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from lifelong.data import build_task
from lifelong.data.spec import TaskSpec
from lifelong.data.task import Stream
from lifelong.evaluate import evaluate_stream, set_eval_references
from lifelong.losses import next_token_loss
from lifelong.models import build_preset, build_tokenizer
from lifelong.preference import dpo_loss, dpo_terms, pair_logprobs, reference_logprobs, reward_margins


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_dpo_loss_by_hand():
    policy = torch.tensor([[-3.0, -5.0], [-4.0, -2.0]])  # (B, 2): chosen, rejected
    reference = torch.tensor([[-4.0, -4.0], [-4.0, -4.0]])
    loss, margins = dpo_loss(policy, reference, beta=0.5)
    # pair 0: 0.5 * ((-3 + 4) - (-5 + 4)) = 1.0; pair 1: 0.5 * (0 - 2) = -1.0
    assert margins.tolist() == [1.0, -1.0]
    expected = -(math.log(sigmoid(1.0)) + math.log(sigmoid(-1.0))) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # at the reference itself every margin is 0 and the loss is log 2
    same, zero = dpo_loss(reference, reference, beta=0.1)
    assert same.item() == pytest.approx(math.log(2)) and zero.abs().max() == 0


def test_dpo_gradient_raises_chosen_lowers_rejected():
    policy = torch.tensor([[-3.0, -3.0]], requires_grad=True)
    loss, _ = dpo_loss(policy, torch.tensor([[-3.0, -3.0]]), beta=0.1)
    loss.backward()
    # d loss / d pi_c = -beta * sigmoid(-margin) = -0.05 at margin 0; +0.05 for pi_r
    assert policy.grad[0].tolist() == pytest.approx([-0.05, 0.05])


def test_pair_logprobs_layout():
    token_loss = torch.tensor([[1.0, 2.0], [0.5, 0.0], [3.0, 0.0], [0.0, 4.0]])  # (2B=4, T-1)
    # rows: chosen 0, chosen 1, rejected 0, rejected 1
    assert pair_logprobs(token_loss).tolist() == [[-3.0, -3.0], [-0.5, -4.0]]
    terms, stats = dpo_terms(token_loss, torch.zeros(2, 2), beta=1.0)
    assert stats["reward_margin"] == pytest.approx((0.0 + 3.5) / 2)
    assert stats["reward_accuracy"] == 0.5
    assert set(terms) == {"dpo"}


def test_dpo_loss_matches_trl():
    """trl 1.16 has no standalone DPO loss function: the loss is computed inside
    `DPOTrainer._compute_loss`, from the model's per-token log-probs. It is called here unbound, on a
    stand-in for the trainer's attributes and a stand-in model returning fixed log-probs (no trainer
    is built), with precomputed reference log-probs: the same numbers must give the same loss."""
    trl_dpo = pytest.importorskip("trl.trainer.dpo_trainer")
    gen = torch.Generator().manual_seed(0)
    B, T, beta = 3, 6, 0.3
    per_token = -torch.rand((2 * B, T - 1), generator=gen) * 2  # (2B, T-1) log-probs, chosen rows first
    completion = torch.zeros((2 * B, T), dtype=torch.long)
    completion[:, 3:] = 1  # the answer: the last 3 tokens
    shift_mask = completion[:, 1:].float()  # (2B, T-1)
    per_token = per_token * shift_mask  # trl sums the (already masked) log-probs of the completion
    ref = -torch.rand((2 * B,), generator=gen) * 5
    outputs = SimpleNamespace(
        log_probs=per_token,
        entropy=torch.zeros_like(per_token),
        mean_logits=torch.zeros_like(per_token),
        is_top1=torch.zeros_like(per_token, dtype=torch.bool),
    )
    identity = SimpleNamespace(gather=lambda x: x, gather_for_metrics=lambda x: x, device=torch.device("cpu"))
    trainer = SimpleNamespace(
        model=SimpleNamespace(training=True),
        accelerator=identity,
        aux_loss_enabled=False,
        ld_alpha=None,
        precompute_ref_logps=True,
        f_divergence_type="reverse_kl",
        loss_types=["sigmoid"],
        loss_weights=[1.0],
        beta=beta,
        use_weighting=False,
        _metrics={"train": defaultdict(list)},
        _total_train_tokens=0,
        _tp_size=1,
    )
    inputs = {
        "input_ids": torch.zeros((2 * B, T), dtype=torch.long),
        "attention_mask": torch.ones((2 * B, T), dtype=torch.long),
        "completion_mask": completion,
        "ref_chosen_logps": ref[:B],
        "ref_rejected_logps": ref[B:],
    }
    theirs = trl_dpo.DPOTrainer._compute_loss(trainer, lambda **kw: outputs, inputs, False)
    policy = pair_logprobs(-per_token)  # our layout: the masked next-token loss, (B, 2)
    ours, margins = dpo_loss(policy, ref.view(2, B).T, beta)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-6)
    assert margins.mean().item() == pytest.approx(trainer._metrics["train"]["rewards/margins"][0], rel=1e-5)


def preference_task(name: str = "p", n: int = 6, **spec):
    rows = [{"prompt": f"q{i} ", "chosen": "yes", "rejected": "no way"} for i in range(n)]
    return build_task(TaskSpec(name=name, kind="preference", train={"examples": rows}, **spec), seed=0)


def test_preference_task_defaults():
    task = preference_task(beta=0.5)
    assert task.kind == "preference" and task.metric == "preference_accuracy" and task.beta == 0.5
    assert task.train[0].target == "yes" and task.train[0].rejected == "no way"
    with pytest.raises(ValueError, match="preference_accuracy"):
        TaskSpec(name="x", kind="prompt_target", metric="preference_accuracy", train={"examples": [{}]})


def encoded(task):
    from lifelong.data.batching import encode_stream

    tokenizer = build_tokenizer(None, [task.token])
    return encode_stream(Stream("s", [task]), tokenizer, 32), tokenizer


def test_pair_rows_share_the_prompt_and_mask_the_answers():
    stream, tokenizer = encoded(preference_task())
    train = stream.tasks[0].train
    assert train.pairs and len(train) == 5 and train.ids.shape[0] == 10  # 6 examples, 1 held out
    batch = train.batch(torch.tensor([0, 3]), loss_on="sequence")  # B = 2 pairs -> 4 rows
    assert batch.input_ids.shape[0] == 4
    for b, row in enumerate(batch.input_ids.tolist()):
        length = int(batch.attention_mask[b].sum())
        text = tokenizer.decode(row[:length], skip_special_tokens=True)
        answer = tokenizer.decode(
            [t for t, m in zip(row, batch.loss_mask[b].tolist(), strict=True) if m],
            skip_special_tokens=True,
        )
        assert answer.strip() == ("yes" if b < 2 else "no way")  # chosen rows first; the mask: the answer
        assert text.endswith(answer) and text.startswith("q")
    assert (
        batch.input_ids[0, : train.target_start[0]].tolist()
        == batch.input_ids[2, : train.target_start[1]].tolist()
    )
    # the default template's target: " " + the chosen answer, then eos
    assert train.targets(1)[0][:-1] == tokenizer(" yes", add_special_tokens=False)["input_ids"]


def tiny_model(vocab: int, seed: int = 0):
    torch.manual_seed(seed)
    return build_preset(
        "tiny", vocab, 32, {"hidden_size": 16, "num_layers": 1, "num_heads": 2, "intermediate_size": 32}
    )


def test_reference_logprobs_match_a_direct_forward():
    stream, tokenizer = encoded(preference_task())
    model = tiny_model(len(tokenizer))
    data = stream.tasks[0].train
    ref = reference_logprobs(model, data, batch_size=2)  # (N, 2) in chunks of 2 pairs
    assert ref.shape == (5, 2)
    batch = data.batch(torch.arange(5))
    with torch.no_grad():
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    token_loss, _ = next_token_loss(logits, batch.input_ids, batch.loss_mask)
    assert torch.allclose(ref, pair_logprobs(token_loss), atol=1e-5)
    assert model.training  # restored


def test_preference_accuracy_is_zero_at_the_reference_and_reports_the_margin():
    stream, tokenizer = encoded(preference_task(n=12))
    model = tiny_model(len(tokenizer))
    set_eval_references(model, stream, batch_size=8, max_examples=None)
    details: dict = {}
    assert evaluate_stream(model, stream, 8, None, details=details) == [0.0]
    assert details["p"] == {"preference_accuracy": 0.0, "reward_margin": 0.0}
    # a model that prefers "yes" (its chosen answer) after a few DPO steps scores 1
    data, ref = stream.tasks[0].train, reference_logprobs(model, stream.tasks[0].train, 8)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(20):
        batch = data.batch(torch.arange(len(data)))
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        loss, _ = dpo_loss(
            pair_logprobs(next_token_loss(logits, batch.input_ids, batch.loss_mask)[0]), ref, 0.1
        )
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert evaluate_stream(model, stream, 8, None, details=details) == [1.0]
    assert details["p"]["reward_margin"] > 0


def test_reward_margins_shape_check():
    with pytest.raises(AssertionError):
        reward_margins(torch.zeros(3, 2), torch.zeros(2, 2), 0.1)


def test_joint_keeps_pairs_together():
    from lifelong.methods.joint import repeated

    stream, _ = encoded(preference_task())
    data = stream.tasks[0].train  # 5 pairs
    more = repeated(data, 7)
    assert more.pairs and len(more) == 7 and more.ids.shape[0] == 14
    assert torch.equal(more.batch(torch.tensor([5])).input_ids, data.batch(torch.tensor([0])).input_ids)


def test_preference_fields_can_be_renamed():
    rows = [{"q": "a", "good": "b", "bad": "c"}] * 3
    source = {"examples": rows, "prompt_field": "q", "chosen_field": "good", "rejected_field": "bad"}
    task = build_task(TaskSpec(name="r", kind="preference", train=source), seed=0)
    assert (task.train[0].prompt, task.train[0].target, task.train[0].rejected) == ("a", "b", "c")
