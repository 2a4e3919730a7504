"""Knowledge editing: a stream of counterfactual fact edits, `edits_per_task` of them a task.

Each edit rewrites one country fact (countryinfo, with pycountry's names) to a false but real value
of the same relation, taken from another country: "The capital of France is" -> "Canberra", "The
currency of Japan is" -> "Euro". An edit comes with
- its edit prompt -> new target: its one training row (`loss_on: target` trains the answer);
- `n_paraphrases` other phrasings of the same question, never trained (generality);
- `n_neighbours` prompts about facts of other countries that no edit of the stream touches, every
  other one of the edit's own relation (locality: the edit must leave their answers as they were).
A task's held-out set holds its edits' prompts, then their paraphrases, then their neighbours
(`Task.parts`). Every task is scored after every task, so a column is one batch of edits judged all
along the stream: toolkits that judge only the edit just made hide what later edits undo.

Built offline and deterministically from the seed: a seeded fifth of every relation's facts is kept
out of the edits (the neighbours' pool) and the edits are a seeded order of the rest, each edit drawn
from its own seed, so the first 100 edits of `n_edits: 1000` are the stream of `n_edits: 100`. Rows
carry no task token: an edit must hold for the plain question, whatever batch it came in.

    from lifelong.data.scenarios.edits import edits_stream
    stream = edits_stream(n_edits=1000, edits_per_task=10)
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from lifelong.data.registry import StreamInfo, register_stream
from lifelong.data.scenarios.common import TEXT_MODEL, shuffled
from lifelong.data.sources.countries import Country, countries, currency_name, language_name
from lifelong.data.task import Example, PromptFormat, Stream, Task, Template
from lifelong.errors import UserError
from lifelong.seeding import derive_seed

NEIGHBOUR_SHARE = 0.2  # of each relation's facts, never edited: the pool the neighbour prompts come from
# Rows: the prompt, a space, the answer; no task token (an edit holds for the plain question).
EDIT_FORMAT = PromptFormat(template=Template(target_prefix=" "), task_token=False)
# What `lifelong run --stream edits` starts from: every edit of a task in each batch, the loss on the
# answer, a constant rate (no warmup: 25 steps), two answers per task in predictions.jsonl.
EDIT_TRAIN = {
    "steps_per_task": 25,
    "batch_size": 10,
    "lr": 1.0e-3,
    "warmup_steps": 0,
    "schedule": "constant",
    "loss_on": "target",
    "predictions": 2,
}


@dataclass(frozen=True)
class Relation:
    prompt: str  # the edit prompt; {c} is the country
    paraphrases: tuple[str, ...]  # other phrasings of the question, none starting with `prompt`
    values: Callable[[Country], tuple[str, ...]]  # the country's true values, the first the one stated


def _named(names: list[str], codes: tuple[str, ...]) -> tuple[str, ...]:
    """The names of `codes` that are names: not a bare code pycountry could not name, no "(...)"."""
    return tuple(n for n, code in zip(names, codes, strict=True) if n != code and "(" not in n)


RELATIONS: dict[str, Relation] = {
    "capital": Relation(
        "The capital of {c} is",
        ("The capital city of {c} is", "{c}'s seat of government is", "The government of {c} sits in"),
        lambda c: (c.capital,) if c.capital else (),
    ),
    "currency": Relation(
        "The currency of {c} is",
        ("In {c}, prices are given in", "The money used in {c} is", "{c} pays in"),
        lambda c: _named([currency_name(x) for x in c.currencies], c.currencies),
    ),
    "language": Relation(
        "The official language of {c} is",
        ("In {c}, people speak", "The main language spoken in {c} is", "{c}'s first language is"),
        lambda c: _named([language_name(x) for x in c.languages], c.languages),
    ),
    "region": Relation(
        "The world region of {c} is",
        ("{c} lies in the world region of", "On a world map, {c} is in", "{c} belongs to the region of"),
        lambda c: (c.region,) if c.region else (),
    ),
    "subregion": Relation(
        "The subregion of {c} is",
        ("{c} lies in the subregion of", "{c} is part of the subregion", "Geographers place {c} in"),
        lambda c: (c.subregion,) if c.subregion else (),
    ),
    "borders": Relation(
        "{c} shares a border with",
        (
            "A country next to {c} is",
            "{c} has a land border with",
            "Travelling overland from {c}, one reaches",
        ),
        lambda c: c.borders,
    ),
}


@dataclass(frozen=True)
class Edit:
    relation: str
    country: str
    prompt: str
    target: str  # the new, false value
    true: str  # the value it replaces
    paraphrases: tuple[str, ...]
    neighbours: tuple[tuple[str, str, str], ...]  # (country, prompt, true value) of facts no edit touches


Facts = list[tuple[str, tuple[str, ...]]]  # (country, its true values) of one relation


def relation_facts(name: str) -> Facts:
    """Every country with a value of relation `name`, by name."""
    values = RELATIONS[name].values
    return [(c.name, values(c)) for c in countries() if values(c)]


def edits_stream(
    n_edits: int = 100,
    edits_per_task: int = 10,
    relations: list[str] | None = None,
    n_paraphrases: int = 2,
    n_neighbours: int = 2,
    seed: int = 0,
) -> Stream:
    """Knowledge editing: counterfactual country-fact edits, a batch per task, all past edits judged.

    `relations` picks among capital, currency, language, region, subregion and borders (all by
    default: 1,089 facts can be edited)."""
    names = list(relations or RELATIONS)
    check_options(names, n_edits, edits_per_task, n_paraphrases, n_neighbours)
    edits = make_edits(names, n_edits, n_paraphrases, n_neighbours, seed)
    batches = [edits[i : i + edits_per_task] for i in range(0, n_edits, edits_per_task)]
    width = max(3, len(str(len(batches))))
    tasks = [edit_task(f"edits-{k + 1:0{width}d}", b, k * edits_per_task) for k, b in enumerate(batches)]
    return Stream(name="edits", tasks=tasks, vocabulary=vocabulary(tasks))


def make_edits(
    names: list[str], n_edits: int, n_paraphrases: int, n_neighbours: int, seed: int
) -> list[Edit]:
    """The first `n_edits` edits of relations `names`, in the stream's order."""
    facts = {r: relation_facts(r) for r in names}
    pool, editable = {}, []
    for r in names:
        order = shuffled(facts[r], seed, "edits-neighbours", r)
        held = max(1, round(NEIGHBOUR_SHARE * len(order)))
        pool[r] = sorted(order[:held])
        editable += [(r, country, values) for country, values in order[held:]]
    order = shuffled(sorted(editable), seed, "edits-order")
    if n_edits > len(order):
        raise UserError(
            f"edits: n_edits is {n_edits}, but relations {', '.join(names)} have {len(order)} facts to edit"
        )
    every = {r: sorted({v for _, values in facts[r] for v in values}) for r in names}
    return [
        make_edit(r, country, values, every[r], pool, n_paraphrases, n_neighbours, seed)
        for r, country, values in order[:n_edits]
    ]


def check_options(
    names: list[str], n_edits: int, per_task: int, n_paraphrases: int, n_neighbours: int
) -> None:
    """The stream's options, refused with one line before anything is built."""
    unknown = [r for r in names if r not in RELATIONS]
    if unknown:
        raise UserError(f"unknown edits relation {unknown[0]!r} (known: {', '.join(RELATIONS)})")
    if len(set(names)) != len(names):
        raise UserError("edits: a relation is listed twice")
    if n_edits < 1 or per_task < 1:
        raise UserError(f"edits: n_edits ({n_edits}) and edits_per_task ({per_task}) must be at least 1")
    most = min(len(RELATIONS[r].paraphrases) for r in names)
    if not 1 <= n_paraphrases <= most:
        raise UserError(f"edits: n_paraphrases must be between 1 and {most} (the phrasings a relation has)")
    if n_neighbours < 1:
        raise UserError("edits: n_neighbours must be at least 1 (locality needs neighbour prompts)")


def make_edit(
    relation: str,
    country: str,
    values: tuple[str, ...],
    every: list[str],
    pool: dict[str, Facts],
    n_paraphrases: int,
    n_neighbours: int,
    seed: int,
) -> Edit:
    """One edit of `country`'s `relation`, from its own seed: a new value that is none of the country's
    true ones (a value of another country), its paraphrases and its neighbours from the pool."""
    rng = random.Random(derive_seed(seed, "edit", relation, country))
    rel = RELATIONS[relation]
    target = rng.choice([v for v in every if v not in values and v != country])
    others = sorted(set(pool) - {relation})
    neighbours: list[tuple[str, str, str]] = []
    for k in range(n_neighbours):
        about = relation if k % 2 == 0 or not others else rng.choice(others)
        taken = {p for _, p, _ in neighbours}
        choices = [
            (c, RELATIONS[about].prompt.format(c=c), vals[0])
            for c, vals in pool[about]
            if c != country and RELATIONS[about].prompt.format(c=c) not in taken
        ]
        if not choices:
            raise UserError(
                f"edits: n_neighbours {n_neighbours} is more than the pool of {about} facts holds"
            )
        neighbours.append(rng.choice(choices))
    return Edit(
        relation,
        country,
        rel.prompt.format(c=country),
        target,
        values[0],
        tuple(p.format(c=country) for p in rng.sample(rel.paraphrases, n_paraphrases)),
        tuple(neighbours),
    )


def edit_task(name: str, edits: list[Edit], first: int) -> Task:
    """A batch of edits as one task: train on the edit prompts; hold out the edit prompts (reliability),
    their paraphrases (generality) and their neighbours (locality), in that order."""
    train = [Example(e.prompt, e.target) for e in edits]
    paraphrases = [Example(p, e.target) for e in edits for p in e.paraphrases]
    neighbours = [Example(p, true) for e in edits for _, p, true in e.neighbours]
    kinds = sorted({e.relation for e in edits})
    return Task(
        name=name,
        kind="edit",
        train=train,
        eval=[*train, *paraphrases, *neighbours],
        metric="reliability",
        token=f"<{name}>",
        description=f"edits {first + 1}-{first + len(edits)} ({', '.join(kinds)})",
        format=EDIT_FORMAT,
        parts=(len(train), len(paraphrases), len(neighbours)),
    )


def vocabulary(tasks: list[Task]) -> list[str]:
    """Every word of the stream's rows: a preset model's word-level tokenizer (a pretrained model keeps
    its own)."""
    texts = (text for t in tasks for ex in t.eval for text in (ex.prompt, ex.target))
    return sorted({word for text in texts for word in text.split()})


register_stream(
    "edits",
    StreamInfo(
        edits_stream,
        source="countryinfo (PyPI) facts with pycountry names, rewritten to counterfactual values",
        task_format="edit prompt -> new target (`The capital of France is` -> `Canberra`); paraphrases "
        "and neighbour prompts held out",
        metric="reliability (exact match of the new target on the edit prompts; generality on paraphrases "
        "and locality on neighbours next to it)",
        model=TEXT_MODEL,
        train=EDIT_TRAIN,
    ),
)
