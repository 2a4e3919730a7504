"""Relation extraction with relation types arriving, two per task: capital or currency -> region or
borders -> hypernym or part_of.

As in the continual relation-extraction benchmarks (FewRel and TACRED split by relation type), a
sentence states a fact about a head and a tail, and the answer is the relation between them, among
the task's relations; every task brings new ones. Facts come from countryinfo (capitals, currencies,
regions, land borders) and WordNet (hypernyms, parts). Each relation has its own phrasings plus
neutral ones shared by all (`{h} -- {t} .`), where only the two names tell the relations apart.
Held-out sentences are about heads never seen in training. Scored by exact match of the generated
answer (accuracy).

`answer: triple` asks for the whole fact instead, `capital: France | Paris`: that needs a model that
copies unseen names, which the 1M-parameter `en-tiny` does not learn in a stream's budget.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from lifelong.data.registry import StreamInfo, register_stream
from lifelong.data.scenarios.common import TASK_TRAIN, TEXT_MODEL, shuffled
from lifelong.data.sources.countries import countries, currency_name
from lifelong.data.sources.wordnet import wordnet_relations
from lifelong.data.task import Example, Stream, Task
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


NEUTRAL = ["{h} -- {t} .", "A note on {h} and {t} ."]  # phrasings shared by every relation
ANSWERS = ("relation", "triple")
DEFAULT_TASKS = [["capital", "currency"], ["region", "borders"], ["hypernym", "part_of"]]


def facts_of(name: str) -> list[tuple[str, str]]:
    """(head, tail) pairs of a relation, sorted; none relates a word to itself (WordNet's Philippines)."""
    return sorted({(h, t) for h, t in RELATIONS[name][0]() if h != t})


def relation_rows(
    name: str, facts: list[tuple[str, str]], held: set[str], answer: str, seed: int
) -> tuple[list[Example], list[Example]]:
    """(train, eval) sentences of one relation: every fact of a `held` head is held out. Training
    facts come in every phrasing (a list of 200 capitals is short), held-out ones in one."""
    phrasings = RELATIONS[name][1] + NEUTRAL
    rng = random.Random(derive_seed(seed, "relation", name))

    def example(head: str, tail: str, phrasing: str) -> Example:
        target = name if answer == "relation" else f"{name}: {head} | {tail}"
        return Example(phrasing.format(h=head, t=tail), target)

    train = [example(h, t, ph) for h, t in facts if h not in held for ph in phrasings]
    eval_ = [example(h, t, rng.choice(phrasings)) for h, t in facts if h in held]
    return shuffled(train, seed, "facts", name), shuffled(eval_, seed, "eval-facts", name)


def relation_task(group: list[str], n_train: int, n_eval: int, answer: str, seed: int) -> Task:
    """One task of `group`'s relations, as many examples of each (up to `n_train` and `n_eval` in all),
    split by head: every fact of a held-out head (a fifth of the group's heads) is held out."""
    name = "-".join(group)
    facts = {r: facts_of(r) for r in group}
    heads = shuffled(sorted({h for pairs in facts.values() for h, _ in pairs}), seed, "relation-heads", name)
    held = set(heads[: max(1, len(heads) // 5)])
    rows = [relation_rows(r, facts[r], held, answer, seed) for r in group]
    per_train = min(n_train // len(group), *(len(train) for train, _ in rows))
    per_eval = min(max(1, n_eval // len(group)), *(len(eval_) for _, eval_ in rows))
    return Task(
        name,
        "prompt_target",
        shuffled([e for train, _ in rows for e in train[:per_train]], seed, "order", name),
        shuffled([e for _, eval_ in rows for e in eval_[:per_eval]], seed, "order-eval", name),
        "exact_match",
        f"<{name}>",
        f"relation: {' or '.join(group)}",
    )


def relations_stream(
    relations: list[list[str] | str] | None = None,
    answer: str = "relation",
    n_train: int = 3000,
    n_eval: int = 100,
    seed: int = 0,
) -> Stream:
    """Relation extraction, two relation types a task: capital/currency -> region/borders -> hypernym/part_of.

    `relations` lists the tasks, each a relation or a list of relations."""
    groups = [[g] if isinstance(g, str) else list(g) for g in (relations or DEFAULT_TASKS)]
    unknown = [r for g in groups for r in g if r not in RELATIONS]
    if unknown:
        raise UserError(f"unknown relation {unknown[0]!r} (known: {', '.join(RELATIONS)})")
    if answer not in ANSWERS:
        raise UserError(f"unknown relations answer {answer!r} (known: {', '.join(ANSWERS)})")
    single = next((g for g in groups if len(set(g)) < 2), None)
    if answer == "relation" and single is not None:
        raise UserError(
            f"relation task {single!r} has one relation, so its answer never changes: "
            "give each task two or more relations, or use answer: triple"
        )
    return Stream(name="relations", tasks=[relation_task(g, n_train, n_eval, answer, seed) for g in groups])


register_stream(
    "relations",
    StreamInfo(
        relations_stream,
        source="countryinfo (PyPI) facts and WordNet (Debian wordnet-base) relations, in templates",
        task_format="[relations] sentence -> relation (answer: triple -> `relation: head | tail`)",
        metric="exact_match (accuracy of the generated relation)",
        model=TEXT_MODEL,
        train=TASK_TRAIN,
    ),
)
