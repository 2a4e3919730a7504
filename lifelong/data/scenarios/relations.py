"""Relation extraction with relation types arriving: capital -> currency -> borders -> hypernym
(also `region` and `part_of`). Each sentence states one fact, in one of several phrasings; the
target is the pair it relates, `head | tail` (the relation is the task's). Facts come from
countryinfo (capitals, currencies, regions, land borders) and WordNet (hypernyms, parts); held-out
sentences are about heads never seen in training, so the task is extraction, not recall. Scored by
exact match of the generated pair (accuracy).
"""

from __future__ import annotations

import random
from collections.abc import Callable

from lifelong.data import Stream, StreamInfo, register_stream
from lifelong.data.scenarios.common import TASK_TRAIN, TEXT_MODEL, shuffled
from lifelong.data.sources.countries import countries, currency_name
from lifelong.data.sources.wordnet import wordnet_relations
from lifelong.data.task import Example, Task
from lifelong.errors import UserError
from lifelong.seeding import derive_seed


def capital_facts() -> list[tuple[str, str]]:
    return [(c.name, c.capital) for c in countries() if c.capital]


def currency_facts() -> list[tuple[str, str]]:
    return [(c.name, currency_name(c.currencies[0])) for c in countries() if c.currencies]


def region_facts() -> list[tuple[str, str]]:
    return [(c.name, c.subregion or c.region) for c in countries() if c.subregion or c.region]


def border_facts() -> list[tuple[str, str]]:
    return [(c.name, b) for c in countries() for b in c.borders]


# relation -> (facts (head, tail), phrasings with {h} and {t})
RELATIONS: dict[str, tuple[Callable[[], list[tuple[str, str]]], list[str]]] = {
    "capital": (
        capital_facts,
        [
            "{t} is the capital of {h} .",
            "The capital of {h} is {t} .",
            "In {h} , the government sits in {t} .",
        ],
    ),
    "currency": (
        currency_facts,
        ["{h} pays in {t} .", "The currency of {h} is the {t} .", "Prices in {h} are given in {t} ."],
    ),
    "region": (
        region_facts,
        ["{h} lies in {t} .", "{h} is a country of {t} .", "On the map , {h} is part of {t} ."],
    ),
    "borders": (
        border_facts,
        ["{h} shares a border with {t} .", "From {h} one can drive to {t} .", "{h} and {t} are neighbours ."],
    ),
    "hypernym": (
        lambda: wordnet_relations("hypernym"),
        ["A {h} is a kind of {t} .", "Every {h} is a {t} .", "The {h} is one type of {t} ."],
    ),
    "part_of": (
        lambda: wordnet_relations("part_holonym"),
        ["A {h} is part of a {t} .", "The {h} belongs to the {t} .", "Each {t} has a {h} ."],
    ),
}


def relation_task(name: str, n_train: int, n_eval: int, seed: int) -> Task:
    """Facts split by head: every fact of a held-out head is held out (a fifth of the heads)."""
    facts_of, phrasings = RELATIONS[name]
    facts = sorted(set(facts_of()))
    heads = shuffled(sorted({h for h, _ in facts}), seed, "relation-heads", name)
    held = set(heads[: max(1, len(heads) // 5)])
    rng = random.Random(derive_seed(seed, "relation", name))

    def example(head: str, tail: str, phrasing: str) -> Example:
        return Example(phrasing.format(h=head, t=tail), f"{head} | {tail}")

    # every phrasing of a training fact (a list of 200 capitals is short), one of a held-out fact
    train = [example(h, t, ph) for h, t in facts if h not in held for ph in phrasings]
    train = shuffled(train, seed, "facts", name)
    eval_ = [example(h, t, rng.choice(phrasings)) for h, t in facts if h in held]
    return Task(
        name,
        "prompt_target",
        train[:n_train],
        eval_[:n_eval],
        "exact_match",
        f"<{name}>",
        f"relation: {name}",
    )


def relations_stream(
    relations: list[str] | tuple[str, ...] = ("capital", "currency", "borders", "hypernym"),
    n_train: int = 3000,
    n_eval: int = 100,
    seed: int = 0,
) -> Stream:
    """Relation extraction, a relation type per task: capital -> currency -> borders -> hypernym."""
    unknown = [r for r in relations if r not in RELATIONS]
    if unknown:
        raise UserError(f"unknown relation {unknown[0]!r} (known: {', '.join(RELATIONS)})")
    return Stream(name="relations", tasks=[relation_task(r, n_train, n_eval, seed) for r in relations])


register_stream(
    "relations",
    StreamInfo(
        relations_stream,
        source="countryinfo (PyPI) facts and WordNet (Debian wordnet-base) relations, in templates",
        task_format="[relation] sentence -> `head | tail`",
        metric="exact_match (accuracy of the extracted pair)",
        model=TEXT_MODEL,
        train=TASK_TRAIN,
    ),
)
