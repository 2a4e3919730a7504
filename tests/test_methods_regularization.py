"""Regularization, distillation and LAMOL: each mechanism does what it claims, its state survives a
checkpoint, EWC forgets less than naive on the small stream of test_methods.py, and LwF does on a
stream whose tasks share their inputs (not on that one)."""

from __future__ import annotations

import pytest
import torch

import lifelong
from lifelong.config import parse_config
from lifelong.data.batching import encode_stream
from lifelong.data.toy import toy_stream
from lifelong.losses import next_token_loss
from lifelong.methods import Forward, MethodContext, build_method
from lifelong.methods.ewc import EWCConfig, diagonal_fisher
from lifelong.methods.feature_reg import FeatureRegConfig
from lifelong.methods.l2 import L2Config
from lifelong.methods.lamol import LamolConfig
from lifelong.methods.lwf import LwFConfig
from lifelong.methods.replay import ReplayConfig, replay_loss
from lifelong.methods.self_replay import SelfReplayConfig
from lifelong.models import build_preset, build_tokenizer
from lifelong.rundir import load_tensors_and_scalars, save_tensors_and_scalars
from tests.conftest import small_config_dict
from tests.test_methods import MODEL, STREAM, TRAIN

# --------------------------------------------------------------------------- helpers


def setup(method_cfg, tasks=("add", "reverse"), seed=0):
    stream = toy_stream(tasks=list(tasks), n_digits=1, n_eval=10, seed=seed)
    tok = build_tokenizer(stream.vocabulary, [t.token for t in stream.tasks])
    data = encode_stream(stream, tok, 16)
    torch.manual_seed(seed)
    overrides = {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 64}
    model = build_preset("tiny", len(tok), 16, overrides).train()
    method = build_method(method_cfg)
    ctx = MethodContext(data, tok, torch.device("cpu"), seed, 8, 16, "sequence")
    return method, method.setup(model, ctx), data


def forward(model, batch) -> Forward:
    """The training forward as `Trainer.step` makes it (one group, task rows only)."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    token_loss, mask = next_token_loss(logits, batch.input_ids, batch.loss_mask)
    return Forward(batch, logits, token_loss, mask)


def some_rows(data, task=1, n=8):
    return data.tasks[task].train.batch(torch.arange(n))


def terms(method, model, batch) -> dict[str, torch.Tensor]:
    return method.loss_terms(model, forward(model, batch), None)


def through_checkpoint(state, tmp_path):
    """The state as a resumed run reads it: safetensors + JSON, nothing pickled."""
    save_tensors_and_scalars(tmp_path / "method", state)
    return load_tensors_and_scalars(tmp_path / "method")


def nudge(model, scale=0.05, seed=1):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen))


# ------------------------------------------------------------------------------- l2


def test_l2_is_zero_at_the_anchor_and_coef_times_the_squared_drift():
    method, model, data = setup(L2Config(coef=0.5))
    batch = some_rows(data)
    method.before_task(0, model)
    assert terms(method, model, batch) == {}  # nothing to keep during the first task
    method.before_task(1, model)
    assert terms(method, model, batch)["penalty"].item() == 0.0
    delta = torch.zeros_like(model.lm_head.weight)
    delta[3] = 0.1
    with torch.no_grad():
        model.lm_head.weight.add_(delta)  # tied to the embedding: one parameter
    expected = 0.5 * (delta**2).sum().item()
    assert terms(method, model, batch)["penalty"].item() == pytest.approx(expected, rel=1e-4)


# ------------------------------------------------------------------------------ ewc


def flat(tensors):
    return torch.cat([t.flatten() for t in tensors])


def ewc_after_first_task(strength=2.0, gamma=1.0, rows=16):
    method, model, data = setup(EWCConfig(strength=strength, gamma=gamma, fisher_rows=rows))
    method.before_task(0, model)
    assert terms(method, model, some_rows(data, 0)) == {}
    method.after_task(0, model)
    return method, model, data


def test_ewc_penalty_is_zero_at_the_anchor_and_grows_faster_along_high_fisher_weights():
    method, model, data = ewc_after_first_task()
    assert all(p.grad is None for p in model.parameters())  # the Fisher pass leaves .grad clean
    batch = some_rows(data)
    assert terms(method, model, batch)["penalty"].item() == 0.0
    fisher = flat(method.fisher)
    high, low = int(fisher.argmax()), int(fisher.argmin())
    assert fisher[high] > 100 * fisher[low]

    def penalty_after_step(index: int, step: float) -> float:
        params = flat(p.detach() for p in method.params).clone()
        params[index] += step
        with torch.no_grad():
            torch.nn.utils.vector_to_parameters(params, method.params)
        value = terms(method, model, batch)["penalty"].item()
        with torch.no_grad():
            torch.nn.utils.vector_to_parameters(flat(method.anchor), method.params)
        return value

    step = 0.1
    assert penalty_after_step(high, step) == pytest.approx(
        0.5 * 2.0 * fisher[high].item() * step**2, rel=1e-3
    )
    assert penalty_after_step(high, step) > penalty_after_step(low, step)
    assert penalty_after_step(high, 2 * step) == pytest.approx(4 * penalty_after_step(high, step), rel=1e-3)


def test_ewc_fisher_is_the_mean_squared_gradient_of_each_rows_log_likelihood():
    """The Fisher of the distribution over whole rows: the gradient of a row's summed token loss (its
    negative log-likelihood), not of its per-token mean, which would scale F by 1/length^2."""
    method, model, data = setup(EWCConfig(fisher_rows=3))
    train = data.tasks[0].train
    rows = torch.tensor([0, 5, 9])
    fisher = diagonal_fisher(model, method_params := list(model.parameters()), train, rows, 1, method.ctx)
    expected = [torch.zeros_like(p) for p in method_params]
    per_token = [torch.zeros_like(p) for p in method_params]
    for r in rows:
        view = forward(model, train.batch(r.view(1)))
        for loss, out in ((view.token_loss.sum(), expected), (view.mean_loss(), per_token)):
            grads = torch.autograd.grad(loss, method_params, retain_graph=True)
            for e, g in zip(out, grads, strict=True):
                e += g**2 / len(rows)
    assert all(torch.allclose(f, e, rtol=1e-5, atol=1e-10) for f, e in zip(fisher, expected, strict=True))
    lengths = train.lengths[rows] - train.prefix_len  # predicted positions of each row
    assert lengths.min() > 1  # so the two estimators differ
    assert not all(torch.allclose(f, e, rtol=1e-3) for f, e in zip(fisher, per_token, strict=True))


def test_ewc_fisher_accumulates_with_decay():
    decayed, model, _ = ewc_after_first_task(gamma=0.5)
    first = [f.clone() for f in decayed.fisher]
    nudge(model)
    decayed.after_task(1, model)
    alone, _, _ = setup(EWCConfig(gamma=0.5, fisher_rows=16))
    alone.after_task(1, model)  # no earlier Fisher: this task's alone
    for total, f1, f2 in zip(decayed.fisher, first, alone.fisher, strict=True):
        assert torch.allclose(total, 0.5 * f1 + f2)
    assert all(torch.equal(a, p) for a, p in zip(decayed.anchor, model.parameters(), strict=True))


def test_ewc_state_round_trips(tmp_path):
    method, model, data = ewc_after_first_task()
    nudge(model)
    batch = some_rows(data)
    expected = terms(method, model, batch)["penalty"].item()
    assert expected > 0
    fresh, _, _ = setup(EWCConfig(strength=2.0, fisher_rows=16))
    fresh.load_state_dict(through_checkpoint(method.state_dict(), tmp_path), model)
    assert terms(fresh, model, batch)["penalty"].item() == expected


# ---------------------------------------------------------------- lwf, feature_reg


@pytest.mark.parametrize(
    "cfg",
    [LwFConfig(coef=2.0, temperature=2.0), FeatureRegConfig(), FeatureRegConfig(target="logits")],
    ids=["lwf", "feature_reg_hidden", "feature_reg_logits"],
)
def test_distillation_is_zero_while_the_model_equals_its_copy_and_positive_after(cfg, tmp_path):
    method, model, data = setup(cfg)
    batch = some_rows(data)
    method.before_task(0, model)
    assert terms(method, model, batch) == {}
    method.before_task(1, model)
    (name, value), *_ = terms(method, model, batch).items()
    assert value.item() == pytest.approx(0.0, abs=1e-7)
    nudge(model, scale=0.02)
    drifted = terms(method, model, batch)[name]
    assert drifted.item() > 1e-4 and drifted.requires_grad
    fresh, model2, _ = setup(cfg)  # the copy survives a checkpoint
    model2.load_state_dict(model.state_dict())
    fresh.load_state_dict(through_checkpoint(method.state_dict(), tmp_path), model2)
    assert terms(fresh, model2, batch)[name].item() == pytest.approx(drifted.item(), rel=1e-5)
    method.after_task(1, model)
    assert terms(method, model, batch) == {}


def test_lwf_old_prefix_distils_the_new_rows_under_an_earlier_tasks_token(tmp_path):
    method, model, data = setup(
        LwFConfig(inputs="old_prefix", replay_fraction=0.5), tasks=("add", "sort", "reverse")
    )
    method.before_task(0, model)
    assert method.replay_batch(0, 0, model) is None
    method.before_task(2, model)
    state = through_checkpoint(method.state_dict(), tmp_path)
    rows = method.replay_batch(2, 0, model)
    p, width = data.prefix_len, rows.input_ids.shape[1]
    earlier = {tuple(t.prefix) for t in data.tasks[:2]}
    assert len(rows) == 4 and all(tuple(r[:p].tolist()) in earlier for r in rows.input_ids)
    new_rows = {tuple(r.tolist()) for r in data.tasks[2].train.ids[:, p:width]}
    assert all(tuple(r[p:].tolist()) in new_rows for r in rows.input_ids)  # the new task's own rows
    task_view = forward(model, some_rows(data, 2))
    assert method.loss_terms(model, task_view, forward(model, rows))["kl"].item() == pytest.approx(
        0, abs=1e-7
    )
    nudge(model, scale=0.02)
    assert method.loss_terms(model, task_view, forward(model, rows))["kl"].item() > 1e-4
    fresh, _, _ = setup(LwFConfig(inputs="old_prefix", replay_fraction=0.5), tasks=("add", "sort", "reverse"))
    fresh.load_state_dict(state, model)
    assert torch.equal(fresh.replay_batch(2, 0, model).input_ids, rows.input_ids)


def test_feature_reg_reads_the_training_forward_through_a_hook():
    method, model, data = setup(FeatureRegConfig(layer=0))
    method.before_task(1, model)
    nudge(model, scale=0.02)
    batch = some_rows(data)
    wide = data.tasks[0].train.batch(torch.arange(4))
    with torch.no_grad():
        model(input_ids=wide.input_ids, attention_mask=wide.attention_mask)  # evaluation: not kept
    assert method.student_out == []
    hooked = terms(method, model, batch)["mse"]
    assert method.student_out == []  # read once per step
    own_forward = method.loss_terms(model, _view(batch), None)["mse"]
    assert own_forward.item() == pytest.approx(hooked.item(), rel=1e-6)
    with torch.no_grad():
        states = model(input_ids=batch.input_ids, output_hidden_states=True).hidden_states
        teacher = method.teacher(input_ids=batch.input_ids, output_hidden_states=True).hidden_states
    mse = ((states[1] - teacher[1]) ** 2).mean()  # block 0's output; every row is full width here
    assert batch.attention_mask.all() and hooked.item() == pytest.approx(mse.item(), rel=1e-5)


def _view(batch) -> Forward:
    """A Forward with no training forward behind it: feature_reg runs its own."""
    empty = torch.zeros(batch.input_ids.shape[0], batch.input_ids.shape[1] - 1)
    return Forward(batch, torch.empty(0), empty, empty)


# ---------------------------------------------------------------------- replay's KD


def test_kl_replay_at_temperature_one_is_the_plain_kl_and_scales_by_t_squared():
    method, model, data = setup(ReplayConfig(loss="kl"))
    teacher = build_preset("tiny", model.config.vocab_size, 16, {"hidden_size": 32, "num_layers": 1})
    view = forward(model, some_rows(data))
    with torch.no_grad():
        t_logits = teacher(input_ids=view.batch.input_ids, attention_mask=view.batch.attention_mask).logits

    def kl_at(t: float) -> torch.Tensor:  # the formula written out
        t_logp = torch.log_softmax(t_logits[:, :-1].float() / t, dim=-1)
        s_logp = torch.log_softmax(view.logits[:, :-1].float() / t, dim=-1)
        kl = (t_logp.exp() * (t_logp - s_logp)).sum(-1)
        return (kl * view.mask).sum() / view.mask.sum().clamp(min=1.0)

    assert torch.equal(replay_loss("kl", view, teacher), kl_at(1.0))
    assert torch.equal(replay_loss("kl", view, teacher, 1.0), kl_at(1.0))
    assert replay_loss("kl", view, teacher, 3.0).item() == pytest.approx(9 * kl_at(3.0).item(), rel=1e-6)
    for cfg in (ReplayConfig, SelfReplayConfig):
        with pytest.raises(ValueError, match="kl_temperature"):
            cfg(loss="ntp", kl_temperature=2.0)
        assert cfg(loss="kl", kl_temperature=2.0).kl_temperature == 2.0


# ---------------------------------------------------------------------------- lamol


def test_lamol_pool_holds_samples_of_each_earlier_task_fixed_for_the_task(tmp_path):
    cfg = LamolConfig(samples_per_task=6, replay_fraction=0.5)
    method, model, data = setup(cfg, tasks=("add", "reverse", "sort"))
    method.before_task(0, model)
    assert method.replay_batch(0, 0, model) is None
    method.before_task(2, model)
    pool = method.pool
    assert len(pool) == 12 and method.pool_tasks.tolist() == [0] * 6 + [1] * 6
    for row, task in zip(pool.input_ids, method.pool_tasks, strict=True):
        prefix = data.tasks[int(task)].prefix
        assert row[: len(prefix)].tolist() == prefix
    assert not pool.loss_mask[:, : len(prefix)].any()  # the prompt is given, not predicted
    ids = pool.input_ids.clone()
    rows = {tuple(r.tolist()) for r in ids}
    for step in range(3):
        replay = method.replay_batch(2, step, model)
        assert len(replay) == 4 and all(tuple(r.tolist()) in rows for r in replay.input_ids)
        replay_view = forward(model, replay)
        assert method.loss_terms(model, forward(model, some_rows(data)), replay_view)["ntp"] > 0
    nudge(model)  # the model drifts during the task: the pool does not change
    assert method.pool is pool and torch.equal(pool.input_ids, ids)

    state = through_checkpoint(method.state_dict(), tmp_path)
    expected = method.replay_batch(2, 3, model).input_ids
    fresh, _, _ = setup(cfg, tasks=("add", "reverse", "sort"))
    fresh.load_state_dict(state, model)
    assert torch.equal(fresh.pool.input_ids, ids) and torch.equal(fresh.pool_tasks, method.pool_tasks)
    assert torch.equal(fresh.replay_batch(2, 3, model).input_ids, expected)
    method.after_task(2, model)
    assert method.replay_batch(2, 4, model) is None


def test_example_configs_load_by_name():
    for name in ("l2", "ewc", "feature_reg", "lwf", "lamol"):
        cfg = lifelong.load_config(f"toy_{name}")
        assert [m.name for m in cfg.methods] == [name]


# ----------------------------------------------------------------------- forgetting


def run_method(tmp_path, method: dict, stream: dict = STREAM, train: dict = TRAIN) -> lifelong.RunResult:
    data = small_config_dict(
        tmp_path, name=method["name"], stream=stream, model=MODEL, train=train, methods=[method]
    )
    return lifelong.run(parse_config(data), show_progress=False)


@pytest.fixture(scope="module")
def naive_run(tmp_path_factory):
    return run_method(tmp_path_factory.mktemp("naive"), {"name": "naive"})


def fgt(result) -> float:
    return lifelong.summary(result.progress.matrix, result.progress.baseline)["FGT"]


# Kept as a record of where LwF does not help (test_lwf_forgets_less_than_naive_on_shared_inputs
# below is where it does): on [add, reverse] the tasks' inputs share nothing.
LWF_DOES_NOT_HELP = (
    "LwF distils the old model on the new task's inputs, and here they share nothing with the old "
    "task's (reverse rows have a NULL second operand and another task token): no coef (0.3-100), T "
    "(1-4) or `inputs` tried kept addition (FGT 0.875-1.0 against naive's 1.0), and `own` at coef >= 1 "
    "also stops reversal from being learned. Strict: tell us if it starts to work."
)


@pytest.mark.parametrize(
    "method",
    [
        {"name": "ewc", "strength": 2.0e4},
        pytest.param(
            {"name": "lwf", "coef": 1.0, "temperature": 2.0},
            marks=pytest.mark.xfail(strict=True, reason=LWF_DOES_NOT_HELP),
        ),
    ],
    ids=["ewc", "lwf"],
)
def test_method_forgets_less_than_naive(tmp_path, naive_run, method):
    result = run_method(tmp_path, method)
    assert fgt(naive_run) >= 0.5
    assert result.progress.matrix[1][1] >= 0.9  # still learns the new task
    assert fgt(result) <= fgt(naive_run) - 0.5


# 2-digit reversal then sort: both read one operand from the same 100 inputs, only the task token and
# the answer differ, so the new task's rows are the old task's inputs. This is the setting LwF is meant
# for, with `old_prefix` (the new rows under the old task's token; the old model answers them as a
# reversal). Scored on all 100 inputs. Measured (seed 0): reversal 1.0 -> 0.55 with naive (FGT
# 0.45: only the inputs whose reversal is sorted stay right), 1.0 -> 0.99 with this lwf (FGT 0.01; coef 3:
# 0.02; `inputs: own`, coef 1: 0.27).
# [add, modadd] on 1 digit shares its inputs too, yet LwF kept nothing there (FGT 1.0 as naive, coef 1,
# T 1-2): addition answers "carry, sum mod 10", modadd "sum mod 10", so from the answer's first token
# on, a new row shows the old model an answer it would not have started (our reading).
SHARED_INPUTS = {"builtin": "toy", "options": {"n_digits": 2, "tasks": ["reverse", "sort"], "n_eval": 100}}
LWF_ON_SHARED_INPUTS = {
    "name": "lwf",
    "inputs": "old_prefix",
    "coef": 1.0,
    "temperature": 2.0,
    "replay_fraction": 0.5,
}


def test_lwf_forgets_less_than_naive_on_shared_inputs(tmp_path_factory):
    train = {**TRAIN, "eval_examples": 100}
    naive = run_method(tmp_path_factory.mktemp("naive"), {"name": "naive"}, SHARED_INPUTS, train)
    lwf = run_method(tmp_path_factory.mktemp("lwf"), LWF_ON_SHARED_INPUTS, SHARED_INPUTS, train)
    for result in (naive, lwf):
        assert result.progress.matrix[0][0] >= 0.9 and result.progress.matrix[1][1] >= 0.9  # both learned
    assert fgt(naive) >= 0.3
    assert fgt(lwf) <= fgt(naive) - 0.3  # measured: 0.01 against 0.45


@pytest.mark.parametrize("target", ["hidden", "logits"])
def test_feature_reg_composes_with_prompt_tuning(tmp_path, target):
    """Prompt tuning puts virtual tokens in front of the input: the feature term reads the input's
    positions of the model and of its frozen copy, whatever the number of prompts in front."""
    methods = [
        {"name": "prompt_tuning", "progressive": True, "num_virtual_tokens": 2},
        {"name": "feature_reg", "target": target, "coef": 1.0},
    ]
    data = small_config_dict(tmp_path, model=MODEL, train={"steps_per_task": 3}, methods=methods)
    result = lifelong.run(parse_config(data), show_progress=False)
    log = [line for line in (result.path / "train_log.jsonl").read_text().splitlines() if '"task": 1' in line]
    assert log and all('"loss_feature_reg.' in line for line in log)
