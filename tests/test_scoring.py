"""Scores of generated text: chrF/BLEU on hand-checked pairs, entity F1 with hallucinated and missed
entities, the entity text format round trip, and a run scored by chrF that also reports BLEU."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

import lifelong
from lifelong.config import parse_config
from lifelong.scoring import bio_tags, bleu, chrf, entity_f1, format_entities, parse_entities
from tests.conftest import small_config_dict


def test_chrf_and_bleu_are_one_for_exact_copies_and_lower_otherwise():
    refs = ["the cat sat on the mat", "el gato"]
    assert chrf(refs, refs, refs) == pytest.approx(1.0)
    assert bleu(refs, refs, refs) == pytest.approx(1.0)
    worse = ["the cat sat", "el perro"]
    assert 0 < chrf(worse, refs, refs) < 1
    assert 0 <= bleu(worse, refs, refs) < 1
    assert chrf(["zzz qqq", "xx"], refs, refs) < chrf(worse, refs, refs)


def test_entity_text_round_trips():
    entities = [("athlete", "Serena Williams"), ("team", "Chicago Bulls")]
    text = format_entities(entities)
    assert text == "athlete: Serena Williams; team: Chicago Bulls"
    assert parse_entities(text) == entities
    assert format_entities([]) == "none" and parse_entities("none") == []
    assert parse_entities("athlete Serena; : x; team:") == []  # malformed parts are dropped


def test_bio_tags_place_each_span_once():
    words = "Bo Li met Bo Li in Paris".split()
    tags, unplaced = bio_tags(words, [("person", "Bo Li"), ("person", "Bo Li"), ("city", "Rome")])
    assert tags == ["B-person", "I-person", "O", "B-person", "I-person", "O", "O"]
    assert unplaced == ["city"]


def test_entity_f1_counts_hits_misses_and_hallucinations():
    source = "Serena Williams joined the Chicago Bulls"
    gold = "athlete: Serena Williams; team: Chicago Bulls"
    assert entity_f1([gold], [gold], [source]) == 1.0
    assert entity_f1(["athlete: Serena Williams"], [gold], [source]) == pytest.approx(2 / 3)  # P 1, R 1/2
    # a predicted entity that is not in the sentence is a false positive: P 1/2, R 1/2
    assert entity_f1(["athlete: Serena Williams; team: Paris"], [gold], [source]) == pytest.approx(0.5)
    assert entity_f1(["team: Serena Williams"], [gold], [source]) == 0.0  # right span, wrong type
    assert entity_f1(["none"], ["none"], ["nothing here"]) == 1.0


@given(
    st.lists(
        st.tuples(st.sampled_from(["person", "team"]), st.sampled_from(["Al", "Bo Li", "Cy Dee Ek"])),
        max_size=3,
    )
)
def test_entity_f1_of_gold_against_itself_is_one(entities):
    source = "x " + " y ".join(span for _, span in entities) + " z"
    text = format_entities(entities)
    assert entity_f1([text], [text], [source]) == 1.0


def test_a_chrf_task_reports_bleu_next_to_it(tmp_path):
    rows = [{"prompt": f"say {w}", "target": w} for w in ["hello", "world", "again", "maybe"] * 4]
    stream = {
        "tasks": [
            {"name": "echo", "metric": "chrf", "train": {"examples": rows}, "eval": {"examples": rows[:4]}}
        ]
    }
    model = {"preset": "tiny", "max_length": 32, "overrides": {"hidden_size": 32, "num_layers": 1}}
    data = small_config_dict(tmp_path, stream=stream, model=model, train={"steps_per_task": 2})
    result = lifelong.run(parse_config(data), show_progress=False)
    matrix = json.loads((result.path / "matrix.json").read_text())
    assert matrix["metrics"] == ["chrf"]
    bleu_matrix = matrix["also_reported"]["bleu"]
    assert len(bleu_matrix["baseline"]) == 1 and len(bleu_matrix["rows"]) == 1
    assert 0 <= bleu_matrix["rows"][0][0] <= 1 and 0 <= result.progress.matrix[0][0] <= 1
