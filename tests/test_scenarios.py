"""The built-in scenario streams on the installed data: deterministic, train and eval disjoint, and
examples checked by hand. Skipped where a source is not installed, unless LIFELONG_REQUIRE_DATA=1
(CI sets it: scripts/fetch_data.sh installs the sources there)."""

from __future__ import annotations

import os

import pytest

from lifelong.config import stream_config
from lifelong.data import builtin_streams
from lifelong.data.scenarios.relations import RELATIONS
from lifelong.data.scenarios.translation import name_pairs, verse_pairs
from lifelong.data.sources import SourceMissing
from lifelong.errors import UserError
from lifelong.scoring import parse_entities

SMALL = {
    "domains": {"train_chars": 20_000, "eval_chars": 4_000},
    "language": {"train_chars": 20_000, "eval_chars": 4_000},
    "temporal": {"train_chars": 20_000, "eval_chars": 4_000},
    "news": {"eval_chars": 4_000},
    "classification": {"n_train": 60, "n_eval": 20},
    "ner": {"n_train": 200, "n_eval": 40, "n_names": 100},
    "relations": {"n_train": 200, "n_eval": 40},
    "translation": {"n_train": 200, "n_eval": 40},
    "instructions": {"n_train": 100, "n_eval": 20},
    "facts": {"n_tasks": 3, "groups_per_task": 1},
}
PRETRAINED_BASE = {
    "instructions": "smollm2-135m-instruct",
    "facts": "smollm2-135m-instruct",
}  # streams suggesting a base other than en-tiny


def build(name: str, seed: int = 0, **options):
    try:
        return builtin_streams()[name].make(seed=seed, **{**SMALL[name], **options})
    except SourceMissing as err:
        if os.environ.get("LIFELONG_REQUIRE_DATA") == "1":
            raise
        pytest.skip(str(err))


@pytest.mark.parametrize("name", list(SMALL))
def test_stream_is_deterministic_and_its_splits_are_disjoint(name):
    first, again = build(name), build(name)
    assert [t.name for t in first.tasks] == [t.name for t in again.tasks]
    for a, b in zip(first.tasks, again.tasks, strict=True):
        assert a.train == b.train and a.eval == b.eval
        assert a.train and a.eval
        assert not set(a.train) & set(a.eval), f"{name}/{a.name}: an example is in train and eval"
    other_seed = build(name, seed=1)
    assert any(a.eval != b.eval for a, b in zip(first.tasks, other_seed.tasks, strict=True))


def test_every_scenario_stream_is_registered_with_defaults():
    streams = builtin_streams()
    assert set(SMALL) | {"toy"} <= set(streams)
    for name in SMALL:
        cfg = stream_config(name, "self_replay")
        assert cfg.model.base == PRETRAINED_BASE.get(name, "en-tiny")
        assert cfg.methods[0].name == "self_replay"


def test_language_stream_is_english_then_spanish():
    stream = build("language")
    assert [t.token for t in stream.tasks] == ["<kjv>", "<rv1909>"]
    english, spanish = (" ".join(e.prompt for e in t.train) for t in stream.tasks)
    assert " the " in english and " and " in english
    assert " que " in spanish and " de " in spanish and " the " not in spanish


def test_classification_labels_by_hand():
    stream = build("classification")
    labels = {t.name: sorted({e.target for e in t.train}) for t in stream.tasks}
    assert labels == {
        "tech": ["computers", "science"],
        "sentiment": ["fresh", "rotten"],
        "party": ["democrat", "republican"],
        "leisure": ["food", "sports"],
    }
    for task in stream.tasks:  # balanced: as many examples of each label
        counts = [sum(e.target == label for e in task.eval) for label in labels[task.name]]
        assert counts[0] == counts[1]


def test_ner_targets_name_spans_of_the_sentence():
    stream = build("ner")
    for task in stream.tasks:
        train_names = {span for e in task.train for _, span in parse_entities(e.target)}
        for ex in task.eval:
            found = parse_entities(ex.target)
            assert found and all(kind == task.name for kind, _ in found)
            assert all(f" {span} " in f" {ex.prompt} " for _, span in found)
            assert not {span for _, span in found} & train_names  # held-out names are unseen


def test_relations_by_hand():
    facts = {name: set(facts_of()) for name, (facts_of, _) in RELATIONS.items()}
    assert {("France", "Paris"), ("Japan", "Tokyo")} <= facts["capital"]
    assert ("France", "Euro") in facts["currency"] and ("dog", "canine") in facts["hypernym"]
    assert ("France", "Spain") in facts["borders"] and ("cell", "organism") in facts["part_of"]
    stream = build("relations")
    assert [t.name for t in stream.tasks] == ["capital-currency", "region-borders", "hypernym-part_of"]
    triples = build("relations", answer="triple")
    for task, facts_task in zip(stream.tasks, triples.tasks, strict=True):
        relations = task.name.split("-")
        assert {e.target for e in task.eval} == set(relations)  # balanced below
        assert len({sum(e.target == r for e in task.eval) for r in relations}) == 1
        for ex, fact in zip(task.eval, facts_task.eval, strict=True):
            relation, pair = fact.target.split(": ", 1)
            head, tail = pair.split(" | ")
            assert ex.prompt == fact.prompt and ex.target == relation
            assert head in ex.prompt and tail in ex.prompt
        heads = {e.target.split(": ", 1)[1].split(" | ")[0] for e in facts_task.train}
        assert not {e.target.split(": ", 1)[1].split(" | ")[0] for e in facts_task.eval} & heads


def test_relations_refuse_a_task_with_one_answer():
    with pytest.raises(UserError, match="has one relation"):
        build("relations", relations=["capital", ["region", "borders"]])
    assert len(build("relations", relations=["capital"], answer="triple").tasks) == 1


def test_translation_pairs_by_hand():
    assert dict(verse_pairs(16))["Jesus wept."] == "Y lloró Jesús."
    assert (
        dict(name_pairs("fr"))["Germany"] == "Allemagne" and dict(name_pairs("de"))["France"] == "Frankreich"
    )
    stream = build("translation")
    assert [t.name for t in stream.tasks] == ["en-fr", "en-de", "en-es"]
    assert all(t.metric == "chrf" for t in stream.tasks)


def test_news_periods_hold_their_own_months():
    stream = build("news")
    assert [t.name for t in stream.tasks] == [
        "news-2020-01-2020-02",
        "news-2020-03-2020-04",
        "news-2020-05-2020-07",
    ]
    early, spring = (" ".join(e.prompt for e in t.train).lower() for t in stream.tasks[:2])
    assert early.count("coronavirus") < spring.count("coronavirus")


def test_text_held_out_by_a_stream_is_never_pretraining_text():
    """Streams and `lifelong pretrain` hold out the same documents of a corpus (`corpus_split`)."""
    from lifelong.data.packing import split_documents
    from lifelong.data.sources import corpus_split

    stream = build("language")
    pretrain_train, _ = split_documents("kjv", 0.02, seed=0)
    stream_eval = {e.prompt for e in stream.tasks[0].eval}
    held_out = set(corpus_split("kjv")[1])
    assert stream_eval and all(any(doc.startswith(text) for doc in held_out) for text in stream_eval)
    assert not {doc for doc in pretrain_train if any(doc.startswith(text) for text in stream_eval)}


def test_instruction_tasks_by_hand():
    stream = build("instructions")
    assert [t.name for t in stream.tasks] == ["modernize", "spanish", "sentiment", "countries", "lists"]
    assert [t.metric for t in stream.tasks] == ["chrf", "chrf", "accuracy", "answer_contains", "exact_match"]
    tasks = {t.name: t for t in stream.tasks}
    assert all(
        e.prompt.startswith("Rewrite this verse in modern English:\n") for e in tasks["modernize"].train
    )
    assert {e.target for e in tasks["sentiment"].eval} == {"fresh", "rotten"}
    facts = {e.prompt: e.target for t in (tasks["countries"].train, tasks["countries"].eval) for e in t}
    assert facts.get("What is the capital of France?", "Paris") == "Paris"
    for ex in tasks["lists"].train:
        request, _, given = ex.prompt.partition(": ")
        words = given.split(", ")
        expected = sorted(words) if request.startswith("Sort") else words[::-1]
        assert ex.target == ", ".join(expected)


def test_a_stream_on_a_pretrained_base_composes_its_suggested_adapter():
    runs = {spec: stream_config("instructions", spec) for spec in ("naive", "self_replay", "lora_per_task")}
    assert [m.name for m in runs["naive"].methods] == ["lora"] and runs[
        "naive"
    ].name == "instructions-naive+lora"
    assert [m.name for m in runs["self_replay"].methods] == ["self_replay", "lora"]
    assert runs["self_replay"].methods[1].r == 16
    assert [m.name for m in runs["lora_per_task"].methods] == ["lora_per_task"]  # adds weights itself
    assert [m.name for m in stream_config("toy", "naive").methods] == ["naive"]  # no suggested adapter
