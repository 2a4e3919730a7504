"""Named-entity recognition with entity types arriving: athlete -> team -> politician -> city.

Sentences are built from templates around real-looking names (Faker's person names and cities;
teams are a city and a nickname). Task k annotates only its own type, as in class-incremental NER:
the target lists the sentence's entities of that type (`athlete: Serena Williams; athlete: ...`), and
half of the sentences carry an unannotated entity of another type in a second clause. Held-out
sentences use names never seen in training. Scored by entity-level F1 (seqeval) of the generated list.
"""

from __future__ import annotations

import random

from lifelong.data.registry import StreamInfo, register_stream
from lifelong.data.scenarios.common import TASK_TRAIN, TEXT_MODEL
from lifelong.data.sources.entities import entities
from lifelong.data.task import Example, Stream, Task
from lifelong.errors import UserError
from lifelong.scoring import format_entities
from lifelong.seeding import derive_seed

NICKNAMES = ["Hawks", "Rovers", "Tigers", "United", "Wanderers", "Comets", "Falcons", "Miners", "Pilots"]

# type -> templates with one {} (or two, for two entities of the type)
TEMPLATES: dict[str, list[str]] = {
    "athlete": [
        "{} scored twice in the second half .",
        "{} won the final in straight sets .",
        "The coach praised {} after the race .",
        "{} broke the national record in the relay .",
        "{} and {} shared the podium on Sunday .",
        "An injury kept {} out of the match .",
    ],
    "team": [
        "The {} beat their rivals at home .",
        "Fans of the {} filled the stadium .",
        "The {} signed a new goalkeeper .",
        "The {} and the {} drew in the derby .",
        "The {} lost the cup final on penalties .",
        "A late goal lifted the {} to the top of the table .",
    ],
    "politician": [
        "Senator {} voted against the bill .",
        "{} announced a run for governor .",
        "The minister {} resigned after the vote .",
        "{} and {} debated the budget on television .",
        "Parliament rejected the proposal by {} .",
        "{} was sworn in as mayor on Monday .",
    ],
    "city": [
        "The festival returns to {} next spring .",
        "Flights to {} were delayed by fog .",
        "Rents keep rising in {} .",
        "The new railway links {} and {} .",
        "Thousands marched through {} on Saturday .",
        "The museum in {} reopened after repairs .",
    ],
}
# a clause with an entity of another type, not annotated by the task
ASIDES: dict[str, str] = {
    "athlete": "while {} watched from the bench",
    "team": "after the {} pulled out",
    "politician": "as {} had promised",
    "city": "in {}",
}


def names_of(kind: str, n: int, seed: int) -> list[str]:
    if kind == "team":
        cities = entities("city", n, derive_seed(seed, "team-cities"))
        rng = random.Random(derive_seed(seed, "nicknames"))
        return sorted({f"{city} {rng.choice(NICKNAMES)}" for city in cities})
    return entities("person" if kind in ("athlete", "politician") else kind, n, derive_seed(seed, kind))


def sentence(kind: str, names: list[str], others: dict[str, list[str]], rng: random.Random) -> Example:
    template = rng.choice(TEMPLATES[kind])
    chosen = rng.sample(names, template.count("{}"))
    text = template.format(*chosen)
    if others and rng.random() < 0.5:
        other = rng.choice(sorted(others))
        aside = ASIDES[other].format(rng.choice(others[other]))
        text = f"{text[:-2]} , {aside} ."
    return Example(text, format_entities([(kind, name) for name in chosen]))


def ner_task(kind: str, pool: dict[str, list[str]], n_train: int, n_eval: int, seed: int) -> Task:
    """Sentences of `kind`: eval ones name the last fifth of the pool, training ones the rest."""
    names = pool[kind]
    cut = len(names) - max(2, len(names) // 5)
    rng = random.Random(derive_seed(seed, "ner", kind))
    others = {k: v for k, v in pool.items() if k != kind}
    train = [sentence(kind, names[:cut], others, rng) for _ in range(n_train)]
    eval_ = [sentence(kind, names[cut:], others, rng) for _ in range(n_eval)]
    return Task(kind, "prompt_target", train, eval_, "entity_f1", f"<{kind}>", f"NER: {kind} names")


def ner_stream(
    types: list[str] | tuple[str, ...] = ("athlete", "team", "politician", "city"),
    n_train: int = 6000,
    n_eval: int = 100,
    n_names: int = 3000,
    seed: int = 0,
) -> Stream:
    """NER, an entity type per task: athlete -> team -> politician -> city."""
    unknown = [t for t in types if t not in TEMPLATES]
    if unknown:
        raise UserError(f"unknown entity type {unknown[0]!r} (known: {', '.join(TEMPLATES)})")
    pool = {kind: names_of(kind, n_names, seed) for kind in TEMPLATES}
    return Stream(name="ner", tasks=[ner_task(kind, pool, n_train, n_eval, seed) for kind in types])


register_stream(
    "ner",
    StreamInfo(
        ner_stream,
        source="templates around Faker names (PyPI faker)",
        task_format="[type] sentence -> `type: name; type: name` (or `none`)",
        metric="entity_f1 (seqeval)",
        model=TEXT_MODEL,
        # copying an unseen name is what the tiny base has to learn here: many names, more steps
        train={**TASK_TRAIN, "steps_per_task": 800, "lr": 2.0e-3, "eval_every": 200, "checkpoint_every": 200},
    ),
)
