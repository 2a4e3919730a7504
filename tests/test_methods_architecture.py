"""Architecture methods do what they claim: prompts and prefixes (progressive: earlier ones kept
bit-identical), bottleneck adapters and block expansion leave the model's outputs unchanged when they
are inserted and the frozen weights bit-identical when trained, KV-cache generation still matches a
no-cache greedy decode, expansion forgets less than naive, routing a copy of the model (self-replay's
pi) switches the copy alone and self-replay samples an earlier task with that task's weights, a killed
run resumes to the same numbers, and incompatible method lists are refused."""

from __future__ import annotations

import copy
import json
import shutil
from functools import partial

import pytest
import torch
from safetensors.torch import load_file

import lifelong
from lifelong.config import parse_config
from lifelong.data.batching import encode_stream
from lifelong.data.toy import toy_stream
from lifelong.errors import UserError
from lifelong.methods import MethodContext, build_method, route_methods
from lifelong.methods.adapters import AdaptersConfig
from lifelong.methods.base import method_entry
from lifelong.methods.expand import ExpandConfig
from lifelong.methods.lora_per_task import LoraPerTaskConfig
from lifelong.methods.prefix_tuning import PrefixTuningConfig
from lifelong.methods.prompt_tuning import PromptTuningConfig
from lifelong.methods.self_replay import SelfReplayConfig, samples_batch
from lifelong.models import build_preset, build_tokenizer
from lifelong.rundir import RunDir
from lifelong.sampling import generate
from lifelong.train import Trainer
from tests.conftest import small_config_dict
from tests.test_cli_errors import assert_one_line_error, run_cli
from tests.test_methods import fgt, run_method

# ----------------------------------------------------------------------------- helpers


def tiny_model(tasks=("add", "reverse"), layers=2):
    stream = toy_stream(tasks=list(tasks), n_digits=1, n_eval=10, seed=0)
    tok = build_tokenizer(stream.vocabulary, [t.token for t in stream.tasks])
    data = encode_stream(stream, tok, 16)
    torch.manual_seed(0)
    overrides = {"hidden_size": 32, "num_layers": layers, "num_heads": 2, "intermediate_size": 64}
    return build_preset("tiny", len(tok), 16, overrides).eval(), data


def attach(method_cfg, model, data):
    method = build_method(method_cfg)
    ctx = MethodContext(data, None, torch.device("cpu"), 0, 8, 16, "sequence")
    return method, method.setup(model, ctx)


def rows(data, task=0, n=6):
    return data.tasks[task].train.batch(torch.arange(n), "sequence")


def logits_of(model, batch):
    with torch.no_grad():
        return model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits


def nudge(params, scale=0.5, seed=1):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params:
            p.add_(scale * torch.randn(p.shape, generator=gen))


def uncached_greedy(model, prompt: list[int], n: int) -> list[int]:
    """Greedy decoding by a full forward of the whole sequence at every step: no cache, no padding."""
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            ids.append(int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[len(prompt) :]


def assert_cache_matches_no_cache(model, data):
    """Prompts of different lengths (left padding, position ids) decoded with the KV cache."""
    prompts = [p[: len(p) - k % 3] for k, p in enumerate(data.tasks[0].eval.prompts(6))]
    cached = generate(model, prompts, 4, data.pad_id, greedy=True)  # (6, 4)
    assert cached.tolist() == [uncached_greedy(model, p, 4) for p in prompts]


def trainer_for(tmp_path, methods, **changes) -> Trainer:
    cfg = parse_config(small_config_dict(tmp_path, methods=methods, **changes))
    return Trainer(cfg, RunDir.create(cfg), show_progress=False)


def run_keeping_snapshots(trainer):
    """Run, returning the weights at the start, after task 1 (its checkpoint) and at the end."""
    start = {n: p.detach().clone() for n, p in trainer.raw.named_parameters()}
    trainer.run()
    after_first = load_file(str(trainer.run_dir.ckpt_dir / "after-task-001" / "model.safetensors"))
    end = {n: p.detach().clone() for n, p in trainer.raw.named_parameters()}
    names = [n for n in end if n in after_first]  # a tied weight is saved under one of its names
    return ({n: d[n] for n in names} for d in (start, after_first, end))


def same(a, b, names) -> bool:
    return bool(names) and all(torch.equal(a[n], b[n]) for n in names)


# ------------------------------------------------------------------ prompts, prefixes

PROMPTS = [
    {"name": "prompt_tuning", "progressive": True, "num_virtual_tokens": 3},
    {"name": "prefix_tuning", "progressive": True, "num_virtual_tokens": 3},
]


@pytest.mark.parametrize("method", PROMPTS, ids=["prompt_tuning", "prefix_tuning"])
def test_progressive_prompts_keep_earlier_prompts_and_the_base_bit_identical(tmp_path, method):
    start, after_first, end = run_keeping_snapshots(trainer_for(tmp_path, [method]))
    task_0 = [n for n in end if ".task_0." in n]
    task_1 = [n for n in end if ".task_1." in n]
    base = [n for n in end if "_tuning." not in n]
    assert same(start, end, base)  # the base is frozen
    assert not same(start, after_first, task_0) and same(after_first, end, task_0)  # kept in task 2
    assert same(start, after_first, task_1) and not same(after_first, end, task_1)  # trained in task 2


@pytest.mark.parametrize("cfg", [PromptTuningConfig, PrefixTuningConfig], ids=["prompt", "prefix"])
def test_prompts_read_by_the_task_they_belong_to_and_generation_with_cache(cfg):
    model, data = tiny_model()
    method, model = attach(cfg(progressive=True, num_virtual_tokens=3), model, data)
    nudge(method.selection.store.parameters(), scale=0.3)
    batch = rows(data)
    method.before_task(1, model)
    assert method.selection.store.active == ["task_1", "task_0"]  # newest first
    trained = logits_of(model, batch)
    assert trained.shape[:2] == batch.input_ids.shape  # the prompt positions are not in the output
    with method.route(0, model):
        assert method.selection.store.active == ["task_0"]
        routed = logits_of(model, batch)
        assert_cache_matches_no_cache(model, data)
    assert not torch.allclose(routed, trained)
    assert method.selection.store.active == ["task_1", "task_0"]  # restored
    assert_cache_matches_no_cache(model, data)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".task_1." in n for n in trainable)


# ------------------------------------------------------------------------------ adapters


@pytest.mark.parametrize("sites", [("attn", "mlp"), ("mlp",)], ids=["houlsby", "pfeiffer"])
def test_adapters_leave_the_outputs_unchanged_when_inserted(sites):
    model, data = tiny_model()
    batch = rows(data)
    before = logits_of(model, batch)
    method, model = attach(AdaptersConfig(sites=sites), model, data)
    assert len(method.sites) == len(sites) * 2  # one site per sublayer and block
    assert torch.allclose(logits_of(model, batch), before)
    nudge([p for s in method.sites for p in s.adapters["task_1"].parameters()])
    with method.route(0, model):  # task 0's adapter (still zero) only
        assert torch.allclose(logits_of(model, batch), before)
    with method.route(1, model):
        assert not torch.allclose(logits_of(model, batch), before)
        assert_cache_matches_no_cache(model, data)


def test_adapters_train_and_leave_the_base_bit_identical(tmp_path):
    start, after_first, end = run_keeping_snapshots(trainer_for(tmp_path, [{"name": "adapters", "size": 4}]))
    adapter = lambda n: ".bottleneck." in n  # noqa: E731
    base = [n for n in end if not adapter(n)]
    task_0 = [n for n in end if ".task_0." in n]
    task_1_up = [n for n in end if ".task_1.up." in n]
    assert same(start, end, base)
    assert not same(start, after_first, task_0) and same(after_first, end, task_0)
    assert all(not after_first[n].any() and end[n].any() for n in task_1_up)  # zero until task 2


# ------------------------------------------------------------------------------- expand


def test_expand_inserts_identity_blocks_and_renumbers_the_cache_slots():
    model, data = tiny_model(tasks=("add", "reverse", "sort"))
    batch = rows(data)
    before = logits_of(model, batch)
    method, model = attach(ExpandConfig(blocks_per_task=2, train_base_on_first_task=True), model, data)
    layers = model.model.layers
    assert len(layers) == 2 + 2 * 2 and model.config.num_hidden_layers == 6  # 2 new blocks per task 2, 3
    assert [b.self_attn.layer_idx for b in layers] == list(range(6))
    assert method.new_indices(1) == [1, 4] and method.new_indices(2) == [2, 5]  # after blocks 0 and 1
    assert torch.allclose(logits_of(model, batch), before, atol=1e-5)
    method.before_task(1, model)
    assert torch.allclose(logits_of(model, batch), before, atol=1e-5)  # fresh copies: identity again
    assert {n.split(".")[2] for n, p in model.named_parameters() if p.requires_grad} == {"1", "4"}
    nudge(p for i in method.new_indices(1) for p in layers[i].parameters())
    assert not torch.allclose(logits_of(model, batch), before, atol=1e-3)
    with method.route(0, model):  # task 1 is scored without task 2's blocks
        assert torch.allclose(logits_of(model, batch), before, atol=1e-5)
        assert_cache_matches_no_cache(model, data)
    assert_cache_matches_no_cache(model, data)


def test_expand_trains_only_the_new_blocks_in_task_2(tmp_path):
    trainer = trainer_for(tmp_path, [{"name": "expand", "train_base_on_first_task": True}])
    start, after_first, end = run_keeping_snapshots(trainer)
    new = [n for n in end if n.startswith("model.layers.1.")]  # the 1 original block, then its copy
    assert trainer.raw.config.num_hidden_layers == 2 and new  # the tiny test model has 1 block
    others = [n for n in end if n not in new]
    assert not same(start, after_first, others)  # the base trains on task 1
    assert same(after_first, end, others) and not same(after_first, end, new)


def test_expand_forgets_less_than_naive(tmp_path_factory):
    naive = run_method(tmp_path_factory.mktemp("naive"), {"name": "naive"})
    expand = run_method(
        tmp_path_factory.mktemp("expand"), {"name": "expand", "train_base_on_first_task": True}
    )
    matrix = expand.progress.matrix
    assert matrix[0][0] >= 0.9 and matrix[1][1] >= 0.9  # learns both
    assert fgt(naive) >= 0.5
    assert fgt(expand) <= fgt(naive) - 0.5  # routed: task 1 scored by the model it was trained as


# ------------------------------------------------------- routing a copy (self-replay's pi)

ROUTED = {
    "lora_per_task": LoraPerTaskConfig(),
    "prompt_tuning": PromptTuningConfig(progressive=True, num_virtual_tokens=3),
    "prefix_tuning": PrefixTuningConfig(progressive=True, num_virtual_tokens=3),
    "adapters": AdaptersConfig(),
    "expand": ExpandConfig(),
}


def composed(cfgs, tasks=("add", "reverse")):
    """Methods set up in list order on a tiny model, with the run's route as `Trainer` builds it; also
    the parameters the methods added (adapters, prompts, blocks)."""
    model, data = tiny_model(tasks)
    stream = toy_stream(tasks=list(tasks), n_digits=1, n_eval=10, seed=0)
    tok = build_tokenizer(stream.vocabulary, [t.token for t in stream.tasks])
    methods = [build_method(cfg) for cfg in cfgs]
    ctx = MethodContext(data, tok, torch.device("cpu"), 0, 8, 16, "sequence", partial(route_methods, methods))
    base = {id(p) for p in model.parameters()}
    for method in methods:
        model = method.setup(model, ctx)
    return methods, model, data, [p for p in model.parameters() if id(p) not in base]


@pytest.mark.parametrize("cfg", ROUTED.values(), ids=ROUTED.keys())
def test_route_on_a_copy_switches_the_copy_and_leaves_the_model_alone(cfg):
    (method,), model, data, added = composed([cfg])
    method.before_task(1, model)
    nudge(added, scale=0.3)  # every task's weights differ
    batch = rows(data)
    trained = logits_of(model, batch)
    with method.route(0, model):
        routed = logits_of(model, batch)
    assert not torch.allclose(routed, trained)
    pi = copy.deepcopy(model)
    grads = [p.requires_grad for p in pi.parameters()]
    with method.route(0, pi):
        assert torch.equal(logits_of(pi, batch), routed)
        assert torch.equal(logits_of(model, batch), trained)  # the model keeps task 1's selection
    assert torch.equal(logits_of(pi, batch), trained)  # restored
    assert [p.requires_grad for p in pi.parameters()] == grads
    with method.route(0, model):  # and the other way round
        assert torch.equal(logits_of(pi, batch), trained)


@pytest.mark.parametrize("cfg", ROUTED.values(), ids=ROUTED.keys())
def test_self_replay_samples_an_earlier_task_with_its_weights(cfg):
    """While task 1 trains, the samples of task 0 are what pi draws inside route(0), not what it draws
    with task 1's weights (the same generator state)."""
    (method, replay), model, data, added = composed([cfg, SelfReplayConfig(replay_fraction=0.5)])
    method.before_task(1, model)  # pi is copied with task 1's weights selected
    nudge(added, scale=0.3)
    replay.before_task(1, model)
    pi, state = replay.teacher, replay.gen.get_state()
    chunk = replay.sample_chunk(1)  # 4 rows x 25 steps, all of task 0
    prompts = [data.tasks[0].prefix] * len(chunk)

    def by_hand(task):
        gen = torch.Generator().set_state(state)
        torch.randint(1, (len(prompts),), generator=gen)  # the choice of prompts (one earlier task)
        with replay.ctx.route(task, pi):
            out = generate(
                pi,
                prompts,
                chunk.input_ids.shape[1] - 1,
                data.pad_id,
                greedy=False,
                generator=gen,
                stop_id=data.eos_id,  # a row ends at its eos and leaves the batch, as self_replay's
                drop_finished=True,
            )
        return samples_batch(prompts, out, data.eos_id, data.pad_id).input_ids

    assert torch.equal(chunk.input_ids, by_hand(0))
    assert not torch.equal(chunk.input_ids, by_hand(1))


# ------------------------------------------------------------------------------- resume


@pytest.mark.parametrize(
    "methods",
    [
        [{"name": "expand", "train_base_on_first_task": True}],
        [{"name": "prompt_tuning", "progressive": True}],
        [{"name": "prefix_tuning", "progressive": True}],
        [{"name": "adapters"}],
        [{"name": "self_replay", "loss": "kl", "refresh_every": 3}, {"name": "prompt_tuning"}],
        [{"name": "self_replay", "refresh_every": 3}, {"name": "prompt_tuning", "progressive": True}],
    ],
    ids=[
        "expand",
        "prompt_tuning",
        "prefix_tuning",
        "adapters",
        "self_replay+prompt_tuning",
        "self_replay+progressive",
    ],
)
def test_a_killed_run_resumes_mid_task_to_the_same_numbers(tmp_path, methods):
    train = {"checkpoint_every": 2, "reset_optimizer": False}
    whole = lifelong.run(parse_config(small_config_dict(tmp_path, methods=methods, train=train)), False)
    killed = tmp_path / "killed"  # the run directory as it was right after a mid-task-2 checkpoint
    shutil.copytree(whole.path, killed)
    (killed / "checkpoints" / "latest").write_text("task-002-step-0000002\n")
    for name in ("matrix.json", "summary.json"):
        (killed / name).unlink()
    resumed = lifelong.resume(killed, show_progress=False)
    assert resumed.progress.matrix == whole.progress.matrix
    losses = lambda p: [json.loads(x)["loss"] for x in (p / "train_log.jsonl").read_text().splitlines()]  # noqa: E731
    assert losses(killed) == losses(whole.path)


# ------------------------------------------------------------------------ compatibility


@pytest.mark.parametrize("arch", ["expand", "prompt_tuning", "prefix_tuning", "adapters"])
def test_architecture_methods_do_not_combine_with_lora(arch, tmp_path, write_config, monkeypatch, capsys):
    assert method_entry(arch).method_cls.compatibility.architecture
    with pytest.raises(UserError, match=f"methods {arch} and lora both add weights"):
        parse_config({"methods": [arch, "lora"]})
    path = write_config(small_config_dict(tmp_path, methods=[arch, "lora"]))
    code, err = run_cli(["run", str(path)], monkeypatch, capsys)
    assert_one_line_error(code, err, f"{arch} and lora both add weights")
    assert not (tmp_path / "runs").exists()
    assert parse_config({"methods": ["self_replay", arch]}).methods[1].name == arch  # with full methods


def test_example_configs_load_by_name():
    for name in ("prompt_tuning", "prefix_tuning", "adapters", "expand"):
        assert [m.name for m in lifelong.load_config(f"toy_{name}").methods] == [name]
