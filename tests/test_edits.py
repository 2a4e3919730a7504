"""The edits stream and GRACE: counterfactual edits with paraphrases and neighbours, built the same
from the same seed; reliability, generality and locality computed as defined (locality against the
initial model's own answers, kept in checkpoints); GRACE's codebook replaces inside a radius only,
grows or splits radii by label, survives a state-dict round trip and a resume; and in a short run
GRACE keeps its earlier edits where naive fine-tuning loses them. Tiny random models throughout."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import lifelong
from lifelong.config import parse_config
from lifelong.data import builtin_streams
from lifelong.data.batching import encode_stream
from lifelong.data.registry import describe_stream
from lifelong.data.scenarios.edits import RELATIONS, edits_stream, make_edits, relation_facts
from lifelong.errors import UserError
from lifelong.evaluate import edit_answers, edit_rows, edit_scores, evaluate_stream, set_eval_references
from lifelong.methods.grace import Codebook, nearest, rms_distances
from lifelong.models import build_preset, build_tokenizer
from lifelong.rundir import RunDir, load_tensors_and_scalars, save_tensors_and_scalars
from lifelong.train import Trainer
from tests.conftest import killed_copy, small_config_dict

EDIT_MODEL = {
    "preset": "tiny",
    "max_length": 24,  # word-level rows: the longest is ~15 tokens
    "overrides": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64},
}


def edits_config(tmp_path, methods, name="edits", n_edits=12, per_task=4, **train):
    """A run of `n_edits` edits, `per_task` a task, on a 1-block model of width 32 (lr 1e-2: naive
    learns a batch of 4 edits in 20 steps)."""
    return small_config_dict(
        tmp_path,
        name=name,
        stream={"builtin": "edits", "options": {"n_edits": n_edits, "edits_per_task": per_task}},
        model=EDIT_MODEL,
        train={
            "steps_per_task": 20,
            "batch_size": per_task,
            "lr": 1e-2,
            "loss_on": "target",
            "eval_examples": None,
            "predictions": 2,
            **train,
        },
        methods=methods,
    )


def run_edits(tmp_path, methods, **kwargs):
    result = lifelong.run(parse_config(edits_config(tmp_path, methods, **kwargs)), show_progress=False)
    return result, json.loads((result.path / "matrix.json").read_text())


# ------------------------------------------------------------------ the stream
def test_counterfactual_targets_are_other_countries_real_values():
    for e in make_edits(list(RELATIONS), 400, 2, 2, seed=0):
        facts = dict(relation_facts(e.relation))
        assert e.true == facts[e.country][0]
        assert e.target not in facts[e.country]  # a false value...
        assert any(e.target in values for c, values in facts.items() if c != e.country)  # ...yet a real one


def test_every_edit_has_paraphrases_and_neighbours_about_other_facts():
    edits = make_edits(list(RELATIONS), 1089, 2, 2, seed=0)  # every fact that can be edited
    edited = {e.prompt for e in edits}
    assert len(edited) == len(edits)
    for e in edits:
        assert len(e.paraphrases) == 2 and len(set(e.paraphrases)) == 2
        assert all(p != e.prompt and not p.startswith(e.prompt) for p in e.paraphrases)
        assert len(e.neighbours) == 2 and len({p for _, p, _ in e.neighbours}) == 2
        assert all(country != e.country for country, _, _ in e.neighbours)  # never the edit's subject
        assert not edited & {p for _, p, _ in e.neighbours}  # facts no edit of the stream touches
        first_country, first_prompt, _ = e.neighbours[0]
        assert first_prompt == RELATIONS[e.relation].prompt.format(c=first_country)  # the same relation


def test_tasks_hold_edits_then_paraphrases_then_neighbours():
    stream = edits_stream(n_edits=25, edits_per_task=10, seed=0)
    assert [len(t.train) for t in stream.tasks] == [10, 10, 5]
    assert [t.parts for t in stream.tasks] == [(10, 20, 20), (10, 20, 20), (5, 10, 10)]
    task = stream.tasks[0]
    assert task.kind == "edit" and task.metric == "reliability" and not task.format.task_token
    assert task.eval[:10] == task.train  # reliability: the edit prompts themselves
    targets = [ex.target for ex in task.train]
    assert [ex.target for ex in task.eval[10:30]] == [t for t in targets for _ in range(2)]  # paraphrases
    assert not {ex.prompt for ex in task.eval[10:]} & {ex.prompt for ex in task.train}  # never trained
    assert "edits-001" in describe_stream("edits", builtin_streams()["edits"])


def test_the_stream_is_the_same_from_the_same_seed_and_grows_by_appending():
    def rows(stream):
        return [(t.name, t.train, t.eval, t.parts) for t in stream.tasks]

    assert rows(edits_stream(n_edits=30, seed=3)) == rows(edits_stream(n_edits=30, seed=3))
    assert rows(edits_stream(n_edits=30, seed=3)) != rows(edits_stream(n_edits=30, seed=4))
    names = list(RELATIONS)
    assert make_edits(names, 10, 2, 2, seed=0) == make_edits(names, 200, 2, 2, seed=0)[:10]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"n_edits": 5000}, "n_edits is 5000, but relations .* have 1089 facts to edit"),
        ({"relations": ["capital", "moons"]}, "unknown edits relation 'moons'"),
        ({"n_paraphrases": 4}, "n_paraphrases must be between 1 and 3"),
        ({"n_neighbours": 0}, "n_neighbours must be at least 1"),
    ],
)
def test_bad_options_are_one_line_errors(options, message):
    with pytest.raises(UserError, match=message):
        edits_stream(**options)


def test_a_user_task_cannot_claim_the_reliability_metric(tmp_path):
    task = {"name": "t", "metric": "reliability", "train": {"examples": [{"prompt": "a", "target": "b"}]}}
    with pytest.raises(UserError, match="'reliability' scores edit tasks"):
        parse_config({"stream": {"tasks": [task]}})


# ------------------------------------------------------------------ the metrics
def tiny_edit_data(n_edits=2):
    """An edit stream of one task, tokenized as a preset model's (word level)."""
    stream = edits_stream(n_edits=n_edits, edits_per_task=n_edits, seed=0)
    tokenizer = build_tokenizer(stream.vocabulary, [])
    return stream, encode_stream(stream, tokenizer, 24), len(tokenizer)


def test_reliability_generality_and_locality_by_hand():
    stream, data, _ = tiny_edit_data()
    task = data.tasks[0]
    rows = edit_rows(task.parts, None)
    assert rows == [[0, 1], [2, 3, 4, 5], [6, 7, 8, 9]]
    assert edit_rows(task.parts, 1) == [[0], [2], [6]]  # eval_examples caps each part
    t0, t1 = (ex.target for ex in stream.tasks[0].train)
    task.base_answers = ["b0", "b1", "b2", "b3"]
    answers = {
        0: t0,  # edit 0 holds
        1: "nope",  # edit 1 does not
        2: f" {t0.upper()}. ",  # edit 0's paraphrases (rows 2, 3): case, spaces and a full stop aside
        3: "x",
        4: "x",  # edit 1's (rows 4, 5)
        5: t1,
        6: "b0",  # neighbours: the initial model's answers kept, but one
        7: "changed",
        8: "B2",
        9: "b3",
    }
    scores, scored = edit_scores(task, data, rows, answers)
    assert scores == {"reliability": 0.5, "generality": 0.5, "locality": 0.75}
    assert scored.score == 0.5 and scored.answers == [t0, "nope"] and scored.correct == [True, False]


def test_locality_is_measured_against_the_initial_models_own_answers():
    torch.manual_seed(0)
    _, data, vocab_size = tiny_edit_data(n_edits=6)
    model = build_preset("tiny", vocab_size, 24)
    task = data.tasks[0]
    set_eval_references(model, data, 64, None)
    rows, answers = edit_answers(model, task, data, 64, None)
    assert task.base_answers == [answers[i] for i in rows[2]]
    assert edit_answers(model, task, data, 3, None)[1] == answers  # an answer does not depend on its batch
    details: dict = {}
    evaluate_stream(model, data, 64, None, details=details)
    assert details[task.name]["locality"] == 1.0  # the initial model answers as itself
    task.base_answers[0] = "an answer the model never gave"
    evaluate_stream(model, data, 64, None, details=details)
    assert details[task.name]["locality"] == 1 - 1 / len(rows[2])


# ------------------------------------------------------------------ GRACE's codebook
def codebook_with_one_key() -> Codebook:
    book = Codebook(hidden=4, sizes=[3], lr_scale=1.0)
    assert book.add(0, torch.tensor([1.0, 0, 0, 0]), label=5, epsilon=0.1) == "added"
    with torch.no_grad():
        book.values[0][0] = 9.0
    return book


def test_a_query_inside_the_radius_is_replaced_and_one_outside_is_not():
    book = codebook_with_one_key()
    # RMS distances to the key (1, 0, 0, 0): 0.005 and 0.09 (inside 0.1), 0.15 (outside)
    x = torch.tensor([[[1.0, 0.01, 0, 0], [1.0, 0.18, 0, 0], [1.0, 0.3, 0, 0]]])  # (1, 3, 4)
    out = torch.arange(12.0).view(1, 3, 4)
    replaced = book.hook(None, (x,), out)
    assert torch.equal(replaced[0, :2], torch.full((2, 4), 9.0))
    assert torch.equal(replaced[0, 2], out[0, 2])
    empty = Codebook(hidden=4, sizes=[3], lr_scale=1.0)
    assert empty.hook(None, (x,), out) is out  # no edit yet: the base's output itself
    queries, keys = torch.randn(50, 16), torch.randn(30, 16)
    distance, which = nearest(queries, keys)  # the fused search finds what the plain distances say
    assert torch.equal(which, rms_distances(queries, keys).argmin(-1))
    assert torch.allclose(distance, rms_distances(queries, keys).min(-1).values, atol=1e-5)


def test_a_near_key_grows_a_radius_of_its_label_and_splits_one_of_another():
    book = codebook_with_one_key()
    # same label, at RMS distance 0.15 (within 0.1 + 0.1): the first entry's radius grows to reach it
    assert book.add(1, torch.tensor([1.0, 0.3, 0, 0]), label=5, epsilon=0.1) == "expanded"
    assert book.radii[0] == pytest.approx(0.15) and not book.live[1]
    # another label at 0.15 from the first key: a new entry, the two radii split the distance
    assert book.add(2, torch.tensor([1.0, -0.3, 0, 0]), label=7, epsilon=0.1) == "split"
    assert book.radii[0] == pytest.approx(0.075) and book.radii[2] == pytest.approx(0.075)
    assert book.live.tolist() == [True, False, True]
    slots, hit = book.lookup(torch.tensor([[1.0, -0.29, 0, 0], [1.0, 0.29, 0, 0]]))
    assert slots.tolist() == [2, 0] and hit.tolist() == [True, False]  # the latter: outside its shrunk radius


def grace_trainer(tmp_path, name="grace", **options) -> Trainer:
    cfg = parse_config(edits_config(tmp_path, [{"name": "grace", **options}], name=name))
    return Trainer(cfg, RunDir.create(cfg), show_progress=False)


def test_the_codebook_survives_a_state_dict_round_trip(tmp_path):
    trainer = grace_trainer(tmp_path, "one")
    grace = trainer.methods[0]
    grace.before_task(0, trainer.raw)
    save_tensors_and_scalars(tmp_path / "method", grace.state_dict())  # safetensors + JSON
    again = grace_trainer(tmp_path, "two").methods[0]
    again.load_state_dict(load_tensors_and_scalars(tmp_path / "method"), None)
    for name in ("keys", "radii", "labels", "live"):
        assert torch.equal(getattr(again.codebook, name), getattr(grace.codebook, name)), name
    assert again.task == 0 and again.counts == grace.counts and grace.counts["added"] > 0
    assert [v.requires_grad for v in again.codebook.values] == [True, False, False]
    assert not any(p.requires_grad for n, p in trainer.raw.named_parameters() if ".grace." not in n)


def test_grace_refuses_what_it_cannot_edit(tmp_path):
    with pytest.raises(
        UserError, match="method grace edits facts: it runs on stream: edits, not on stream 'toy'"
    ):
        parse_config(small_config_dict(tmp_path, methods=["grace"]))  # before any model loads
    with pytest.raises(UserError, match="methods ft_l and grace both add weights"):
        parse_config(edits_config(tmp_path, ["ft_l", "grace"]))  # both freeze the base
    with pytest.raises(UserError, match="grace layer 3 does not exist: the model has 1 blocks"):
        run_edits(tmp_path, [{"name": "grace", "layer": 3}])


# ------------------------------------------------------------------ runs
@pytest.mark.parametrize("tag", ["after-task-001", "task-002-step-0000010"])
def test_a_resumed_grace_run_gives_the_same_matrix(tmp_path, tag):
    whole, matrix = run_edits(tmp_path, ["grace"], n_edits=8, checkpoint_every=10)
    saved = json.loads((whole.path / "checkpoints" / tag / "preference.json").read_text())
    assert len(saved["base_answers.edits-001"]) == 8  # the initial model's neighbour answers, kept
    killed = killed_copy(whole.path, tag, tmp_path / "killed")
    resumed = lifelong.resume(killed, show_progress=False)
    assert resumed.progress.matrix == whole.progress.matrix
    assert json.loads((killed / "matrix.json").read_text())["also_reported"] == matrix["also_reported"]


def test_a_resumed_run_reads_the_base_answers_its_checkpoint_kept(tmp_path):
    whole, matrix = run_edits(tmp_path, ["grace"], n_edits=8)
    assert matrix["also_reported"]["locality"]["rows"][-1] == [1.0, 1.0]
    killed = tmp_path / "killed"
    shutil.copytree(whole.path, killed)
    (killed / "checkpoints" / "latest").write_text("after-task-001\n")
    kept = killed / "checkpoints" / "after-task-001" / "preference.json"
    saved = json.loads(kept.read_text())
    saved["base_answers.edits-002"] = ["not what the initial model said"] * 8
    kept.write_text(json.dumps(saved))
    for name in ("matrix.json", "summary.json"):
        (killed / name).unlink()
    lifelong.resume(killed, show_progress=False)
    resumed = json.loads((killed / "matrix.json").read_text())
    assert resumed["also_reported"]["locality"]["rows"][-1] == [1.0, 0.0]  # measured against the saved ones


def test_grace_keeps_earlier_edits_where_naive_forgets_them(tmp_path):
    _, naive = run_edits(tmp_path, ["naive"], name="naive")
    _, grace = run_edits(tmp_path, ["grace"], name="grace")
    assert naive["rows"][0][0] >= 0.75 and naive["rows"][-1][0] <= 0.25  # learnt, then lost
    assert all(grace["rows"][k][j] == 1.0 for k in range(3) for j in range(k + 1))
    assert grace["also_reported"]["locality"]["rows"][-1] == [1.0, 1.0, 1.0]
    assert naive["also_reported"]["locality"]["rows"][-1][0] < 1.0  # fine-tuning moves other answers
    edits = json.loads((tmp_path / "runs" / "grace" / "summary.json").read_text())["edits"]
    assert edits["made"] == 12 and edits["per_task"] == [4, 4, 4]
    assert edits["after_last_task"]["reliability"] == 1.0
    assert edits["first_100"]["reliability_after_last_task"] == 1.0 and edits["train_seconds_per_edit"] > 0


@pytest.mark.parametrize(
    "method",
    ["replay", "lora_per_task", {"name": "self_replay", "source": "stored"}],
    ids=["replay", "lora_per_task", "self_replay-stored"],
)
def test_other_methods_run_on_the_edits_stream(tmp_path, method):
    _, matrix = run_edits(tmp_path, [method], n_edits=6, per_task=3, steps_per_task=4)
    assert len(matrix["rows"]) == 2 and set(matrix["also_reported"]) >= {"generality", "locality"}


@pytest.mark.parametrize(
    ("method", "message"),
    [("self_replay", "self_replay prompts its samples"), ("lamol", "lamol prompts its pseudo-examples")],
)
def test_methods_that_prompt_by_task_token_refuse_the_edits_stream(tmp_path, method, message):
    with pytest.raises(UserError, match=f"{message} .*task 'edits-001'.*start with none"):
        run_edits(tmp_path, [method], n_edits=6, per_task=3)


def test_ft_l_trains_one_projection_and_keeps_it_in_its_box(tmp_path):
    eps = 1e-3
    methods = [{"name": "ft_l", "epsilon": eps}]
    cfg = parse_config(edits_config(tmp_path, methods, n_edits=6, per_task=3, steps_per_task=5))
    trainer = Trainer(cfg, RunDir.create(cfg), show_progress=False)
    before = {n: p.detach().clone() for n, p in trainer.raw.named_parameters()}
    trainer.run()
    changed = [n for n, p in trainer.raw.named_parameters() if not torch.equal(p, before[n])]
    assert changed == ["model.layers.0.mlp.down_proj.weight"]
    weight = trainer.raw.model.layers[0].mlp.down_proj.weight
    assert (weight - trainer.methods[0].anchor).abs().max() <= eps + 1e-6  # the last task's box
    assert (weight - before[changed[0]]).abs().max() <= 2 * eps + 1e-6  # two tasks, a box each
