"""One seeded split for every caller (lifelong/data/split.py), pinned to the held-out indices each
caller drew before the three splits became one, so that no recorded scenario number moves."""

from __future__ import annotations

import pytest

from lifelong.data import build_task
from lifelong.data.packing import split_documents
from lifelong.data.scenarios.common import split
from lifelong.data.sources import SourceMissing, corpus_split
from lifelong.data.spec import TaskSpec
from lifelong.data.split import seeded_split

ITEMS = list(range(23))


def test_user_file_split_keeps_file_order_and_its_old_indices():
    rows = [{"prompt": f"p{i}", "target": f"t{i}"} for i in ITEMS]
    spec = TaskSpec(name="mytask", train={"examples": rows}, eval_fraction=0.2)
    task = build_task(spec, seed=7)
    assert [int(e.prompt[1:]) for e in task.eval] == [0, 7, 9, 12, 15]
    assert [int(e.prompt[1:]) for e in task.train][:5] == [1, 2, 3, 4, 5]
    assert len(task.train) + len(task.eval) == len(ITEMS)


def test_scenario_split_is_shuffled_and_keeps_its_old_indices():
    train, eval_ = split(ITEMS, 5, 3, "translation", "fr")
    assert eval_ == [1, 7, 15, 22, 9] and train[:5] == [13, 8, 11, 5, 0]
    assert sorted(train + eval_) == ITEMS


def test_corpus_file_split_keeps_its_old_documents(tmp_path):
    path = tmp_path / "docs.txt"
    path.write_text("\n\n".join(f"doc {i}" for i in range(30)))
    train, held = split_documents(f"file:{path}", 0.1, 5)
    assert held == ["doc 1", "doc 4", "doc 18"] and train[:3] == ["doc 0", "doc 2", "doc 3"]


def test_registered_corpus_split_scores_its_old_held_out_documents():
    try:
        _, held_out = corpus_split("kjv")
    except SourceMissing:
        pytest.skip("the KJV corpus is not installed")
    _, scored = split_documents("kjv", 0.02, 0)
    assert len(scored) == 24
    assert [held_out.index(d) for d in scored][:13] == [3, 4, 10, 13, 15, 21, 22, 23, 28, 32, 33, 34, 37]
    assert [held_out.index(d) for d in split_documents("kjv", 0.02, 3)[1]][:8] == [
        0,
        4,
        6,
        14,
        18,
        20,
        24,
        29,
    ]


def test_seeded_split_options():
    kept = seeded_split(ITEMS, 5, 3, "translation", "fr")
    shuffled = seeded_split(ITEMS, 5, 3, "translation", "fr", keep_order=False)
    assert kept[1] == sorted(shuffled[1]) and sorted(kept[0]) == kept[0]
    assert seeded_split(ITEMS, 5, 3, "x", permutation_from="torch") != seeded_split(ITEMS, 5, 3, "x")
    assert seeded_split(ITEMS, 0, 1, "x") == (ITEMS, [])
