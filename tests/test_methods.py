"""Methods do what they claim: replay and self-replay forget less than naive on a small stream with a
fixed seed; joint trains on the union; self-replay's samples come from the frozen copy, full length."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import lifelong
from lifelong.config import parse_config
from lifelong.data.batching import encode_stream
from lifelong.data.toy import toy_stream
from lifelong.methods import MethodContext, build_method
from lifelong.methods.joint import JointConfig
from lifelong.methods.replay import ReplayBuffer, balanced_quotas
from lifelong.methods.self_replay import SelfReplayConfig, samples_batch
from lifelong.models import build_preset, build_tokenizer
from lifelong.seeding import generator
from tests.conftest import small_config_dict

STREAM = {"builtin": "toy", "options": {"n_digits": 1, "tasks": ["add", "reverse"], "n_eval": 100}}
MODEL = {
    "preset": "tiny",
    "max_length": 16,
    "overrides": {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "intermediate_size": 256},
}
TRAIN = {"steps_per_task": 300, "batch_size": 32, "lr": 3e-3, "warmup_steps": 20, "schedule": "cosine"}


def run_method(tmp_path, method: dict) -> lifelong.RunResult:
    data = small_config_dict(
        tmp_path, name=method["name"], stream=STREAM, model=MODEL, train=TRAIN, methods=[method]
    )
    return lifelong.run(parse_config(data), show_progress=False)


@pytest.fixture(scope="module")
def naive_run(tmp_path_factory):
    return run_method(tmp_path_factory.mktemp("naive"), {"name": "naive"})


def fgt(result) -> float:
    return lifelong.summary(result.progress.matrix, result.progress.baseline)["FGT"]


def test_naive_learns_each_task_then_forgets(naive_run):
    matrix = naive_run.progress.matrix
    assert matrix[0][0] >= 0.9 and matrix[1][1] >= 0.9
    assert fgt(naive_run) >= 0.5


@pytest.mark.parametrize(
    "method",
    [
        {"name": "replay", "replay_fraction": 0.5, "buffer_size": 100},
        {"name": "self_replay", "replay_fraction": 0.5, "coef": 1.0},
        {"name": "self_replay", "replay_fraction": 0.5, "coef": 1.0, "loss": "kl"},
        {"name": "self_replay", "replay_fraction": 0.5, "coef": 1.0, "source": "stored"},
        {"name": "joint"},
    ],
    ids=["replay", "self_replay_ntp", "self_replay_kl", "self_replay_stored", "joint"],
)
def test_method_forgets_less_than_naive(tmp_path, naive_run, method):
    result = run_method(tmp_path, method)
    assert result.progress.matrix[1][1] >= 0.9  # still learns the new task
    assert fgt(result) <= fgt(naive_run) - 0.4
    assert fgt(result) <= 0.1


def tiny_setup(method_cfg, seed=0):
    stream = toy_stream(tasks=["add", "reverse"], n_digits=1, n_eval=10, seed=seed)
    tok = build_tokenizer(stream.vocabulary, [t.token for t in stream.tasks])
    data = encode_stream(stream, tok, 16)
    torch.manual_seed(seed)
    model = build_preset("tiny", len(tok), 16, {"hidden_size": 32, "num_layers": 1, "num_heads": 2})
    method = build_method(method_cfg)
    ctx = MethodContext(data, tok, torch.device("cpu"), seed, 8, 16, "sequence")
    return method, method.setup(model, ctx), data


def test_self_replay_samples_earlier_tasks_from_the_frozen_copy_full_length():
    method, model, data = tiny_setup(SelfReplayConfig(replay_fraction=0.5, refresh_every=3))
    method.before_task(0, model)
    assert method.replay_batch(0, 0, model) is None  # nothing to replay during the first task
    method.after_task(0, model)
    method.before_task(1, model)
    with torch.no_grad():
        model.model.embed_tokens.weight.add_(1.0)  # the model drifts; the teacher must not
    assert not torch.equal(method.teacher.model.embed_tokens.weight, model.model.embed_tokens.weight)
    batch = method.replay_batch(1, 0, model)
    assert len(batch) == 4  # round(0.5 * 8)
    assert (batch.input_ids[:, 0] == data.tasks[0].prefix[0]).all()  # prompted by task 1's token
    assert batch.input_ids.shape[1] == data.max_len  # full length, no early stop
    assert len(method.chunk) == 4 * 3  # one chunk serves `refresh_every` steps
    assert not batch.loss_mask[:, 0].any()  # the prompt token is given, not predicted


def test_kl_from_the_sampling_logits_equals_kl_from_a_teacher_forward(monkeypatch):
    """With loss: kl, pi's logits kept while sampling replace a teacher forward over the replay rows."""
    import lifelong.methods.self_replay as self_replay_module
    from lifelong.losses import next_token_loss
    from lifelong.methods.base import Forward

    losses = {}
    for limit in (2**26, 0):  # 0: nothing is cached, the teacher runs a forward
        monkeypatch.setattr(self_replay_module, "MAX_CACHED_LOGITS", limit)
        method, model, _ = tiny_setup(SelfReplayConfig(replay_fraction=0.5, refresh_every=3, loss="kl"))
        method.after_task(0, model)
        method.before_task(1, model)
        with torch.no_grad():
            model.model.embed_tokens.weight.mul_(1.5)  # the student differs from pi
        replay = method.replay_batch(1, 0, model).trimmed()
        assert (method.batch_logits is not None) == (limit > 0)
        logits = model(input_ids=replay.input_ids, attention_mask=replay.attention_mask).logits
        token_loss, mask = next_token_loss(logits, replay.input_ids, replay.loss_mask)
        losses[limit] = method.loss_terms(model, None, Forward(replay, logits, token_loss, mask))["kl"]
    assert losses[0] > 0
    torch.testing.assert_close(losses[2**26], losses[0], rtol=1e-4, atol=1e-6)


def test_samples_are_cut_after_the_first_eos():
    eos, pad = 1, 0
    sampled = torch.tensor([[5, eos, 7, 8], [5, 6, 7, 8]])
    batch = samples_batch([[9], [9]], sampled, eos, pad)
    assert batch.input_ids.tolist() == [[9, 5, eos, pad, pad], [9, 5, 6, 7, 8]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert batch.loss_mask.tolist() == [[False, True, True, False, False], [False, True, True, True, True]]


def test_self_replay_state_round_trips():
    method, model, _ = tiny_setup(SelfReplayConfig(replay_fraction=0.5, refresh_every=3))
    method.after_task(0, model)
    method.before_task(1, model)
    method.replay_batch(1, 0, model)
    state = method.state_dict()
    expected = method.replay_batch(1, 1, model).input_ids
    other, model2, _ = tiny_setup(SelfReplayConfig(replay_fraction=0.5, refresh_every=3))
    other.load_state_dict(state, model2)
    assert torch.equal(other.replay_batch(1, 1, model2).input_ids, expected)
    assert all(
        torch.equal(a, b)
        for a, b in zip(other.teacher.parameters(), method.teacher.parameters(), strict=True)
    )


def test_reservoir_buffer_keeps_tasks_in_proportion_to_their_size():
    """`balanced: false`: one reservoir over every row offered, so sort's 100 rows next to addition's
    1,200 fill about 100/1300 of it (the balanced default would give each task half)."""
    stream = toy_stream(tasks=["add", "sort"], n_digits=2, n_train=1200, seed=0)
    tok = build_tokenizer(stream.vocabulary, [t.token for t in stream.tasks])
    data = encode_stream(stream, tok, 16)
    assert [len(t.train) for t in data.tasks] == [1200, 100]
    buffer = ReplayBuffer(200, generator(0, "test"), balanced=False)
    for i, task in enumerate(data.tasks):
        buffer.add(task.train, i)
    assert len(buffer) == 200 and buffer.seen == 1300
    share_sort = buffer.tasks.count(1) / len(buffer)
    assert 0.02 < share_sort < 0.15  # 100 / 1300 = 0.077
    first_tokens = [int(row[0]) for row in buffer.rows]
    assert first_tokens == [data.tasks[t].prefix[0] for t in buffer.tasks]  # each row's own task
    batch, tasks = buffer.sample(32, data.prefix_len, data.pad_id, "sequence")
    assert [int(row[0]) for row in batch.input_ids] == [data.tasks[t].prefix[0] for t in tasks]


@pytest.mark.parametrize("balanced", [True, False])
def test_buffer_never_holds_more_than_its_capacity(balanced):
    """Capacity 2 over 5 tasks: 2 rows (the balanced quota once gave every task one slot: 5 rows)."""
    stream = toy_stream(tasks=["add", "reverse", "sort", "modadd", "add"][:4], n_digits=1, seed=0)
    tok = build_tokenizer(stream.vocabulary, [t.token for t in stream.tasks])
    data = encode_stream(stream, tok, 16)
    buffer = ReplayBuffer(2, generator(0, "cap"), balanced=balanced)
    for i in range(5):
        buffer.add(data.tasks[i % 4].train, i)
        assert len(buffer) <= 2
    assert len(buffer) == 2


@given(capacity=st.integers(1, 5000), n_tasks=st.integers(1, 60))
def test_balanced_quotas_fill_the_capacity_evenly_and_only_shrink(capacity, n_tasks):
    quotas = balanced_quotas(capacity, n_tasks)
    assert sum(quotas) == capacity
    assert max(quotas) - min(quotas) <= 1
    assert all(q <= p for q, p in zip(balanced_quotas(capacity, n_tasks + 1), quotas, strict=False))


def test_balanced_buffer_gives_each_task_an_equal_share_whatever_its_size():
    stream = toy_stream(tasks=["add", "sort"], n_digits=2, n_train=2000, seed=0)  # 2000 vs 100 rows
    tok = build_tokenizer(stream.vocabulary, [t.token for t in stream.tasks])
    data = encode_stream(stream, tok, 16)
    balanced = ReplayBuffer(100, generator(0, "b"))
    proportional = ReplayBuffer(100, generator(0, "p"), balanced=False)
    for buffer in (balanced, proportional):
        for i, task in enumerate(data.tasks):
            buffer.add(task.train, i)
    assert len(balanced) == len(proportional) == 100
    assert balanced.tasks.count(0) == balanced.tasks.count(1) == 50
    assert proportional.tasks.count(1) < 20  # sort's 100 rows against addition's 2000
    rows = {tuple(r.tolist()) for r in balanced.rows}
    assert len(rows) == 100  # sampled without replacement
    state = balanced.state_dict("b.")
    again = ReplayBuffer(100, generator(1, "other"))
    again.load_state_dict(state, "b.")
    assert again.tasks == balanced.tasks and all(
        torch.equal(a, b) for a, b in zip(again.rows, balanced.rows, strict=True)
    )


def test_joint_trains_on_the_union_of_tasks_so_far():
    method, _, data = tiny_setup(JointConfig(balanced=False))
    assert len(method.train_examples(0, data)) == len(data.tasks[0].train)
    assert len(method.train_examples(1, data)) == len(data.tasks[0].train) + len(data.tasks[1].train)


def test_balanced_joint_gives_every_task_an_equal_share():
    method, _, data = tiny_setup(JointConfig())
    sizes = [len(t.train) for t in data.tasks[:2]]
    union = method.train_examples(1, data)
    assert len(union) == 2 * max(sizes)
    small = min(range(2), key=lambda i: sizes[i])
    token = data.tasks[small].train.prefix_len - 1  # the column of the task token
    small_token = data.tasks[small].train.ids[0, token]
    assert int((union.ids[:, token] == small_token).sum()) == max(sizes)  # repeated up to the largest
