"""Alignment with objectives arriving, one per task: concise -> truthful -> spanish -> polite.

Each task is a preference task (prompt, chosen, rejected), trained with DPO (lifelong/preference.py)
and scored by preference accuracy: the fraction of held-out pairs whose implicit reward margin, against
the initial model, is > 0. The questions are about countries and capitals (countryinfo, Spanish names
from pycountry), so every objective shares the same facts and only the preferred style changes:

- `concise`: a plain answer over the same answer padded with filler;
- `truthful`: the country's real capital over another country's capital;
- `spanish`: a Spanish reply to a Spanish question over the same reply in English;
- `polite`: a courteous answer over a curt one (longer, with pleasantries: it pulls against `concise`).

Held out: the questions about a seeded fifth of the countries, for every objective but `truthful`,
whose held-out pairs ask about the training countries with other false capitals and another phrasing
(a model cannot prefer the true capital of a country it has never heard of). Deterministic given the
seed; `n_train`, `n_eval` and the objectives are options.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from lifelong.data.registry import StreamInfo, register_stream
from lifelong.data.scenarios.common import shuffled
from lifelong.data.sources.countries import countries, country_names
from lifelong.data.task import DPO_BETA, Example, Stream, Task
from lifelong.errors import UserError
from lifelong.seeding import derive_seed

MAX_NAME_CHARS = 20  # longer country/capital names are left out: rows stay within a 128-byte context

Fact = tuple[str, str, str]  # (English country name, Spanish country name, capital)
# an objective: (fact, every fact, rng, held out?) -> (prompt, chosen, rejected), and what it prefers
Maker = Callable[[Fact, list[Fact], random.Random, bool], tuple[str, str, str]]

FILLERS = [
    "Well, let me think about that for a moment. I would say it is",
    "That is a good question, and as far as I know the answer is",
    "Hmm, if I remember correctly, and I think I do, it is",
]
POLITE = [
    ("Of course! It is {c}. Happy to help.", "{c}. Obviously."),
    ("Certainly, the capital is {c}. Thank you for asking!", "It's {c}. Next."),
    ("Good question! That would be {c}. Have a nice day.", "{c}, what else."),
]


def concise(fact: Fact, facts: list[Fact], rng: random.Random, held: bool) -> tuple[str, str, str]:
    country, _, capital = fact
    return f"What is the capital of {country}?", f"{capital}.", f"{rng.choice(FILLERS)} {capital}."


def truthful(fact: Fact, facts: list[Fact], rng: random.Random, held: bool) -> tuple[str, str, str]:
    country, _, capital = fact
    false = rng.choice([c for _, _, c in facts if c != capital])
    prompt = f"Which city is the capital of {country}?" if held else f"The capital of {country} is"
    return prompt, f"{capital}.", f"{false}."


def spanish(fact: Fact, facts: list[Fact], rng: random.Random, held: bool) -> tuple[str, str, str]:
    country, pais, capital = fact
    return (
        f"¿Cuál es la capital de {pais}?",
        f"La capital de {pais} es {capital}.",
        f"The capital of {country} is {capital}.",
    )


def polite(fact: Fact, facts: list[Fact], rng: random.Random, held: bool) -> tuple[str, str, str]:
    country, _, capital = fact
    kind, curt = rng.choice(POLITE)
    return f"Tell me the capital of {country}.", kind.format(c=capital), curt.format(c=capital)


OBJECTIVES: dict[str, tuple[Maker, str]] = {
    "concise": (concise, "a plain answer over one padded with filler"),
    "truthful": (truthful, "the real capital over another country's"),
    "spanish": (spanish, "a Spanish reply to a Spanish question over an English one"),
    "polite": (polite, "a courteous answer over a curt one"),
}
DEFAULT_OBJECTIVES = ["concise", "truthful", "spanish", "polite"]


def capital_facts() -> list[Fact]:
    """(country, its Spanish name, capital) of every country with a capital and short names, sorted."""
    spanish_names = country_names("es")
    facts = [
        (c.name, spanish_names.get(c.name, c.name), c.capital)
        for c in countries()
        if c.capital
        and max(len(c.name), len(c.capital), len(spanish_names.get(c.name, ""))) <= MAX_NAME_CHARS
    ]
    return sorted(facts)


def preference_task(
    name: str, facts: list[Fact], held: set[str], n_train: int, n_eval: int, beta: float, seed: int
) -> Task:
    """One objective's pairs: training pairs drawn over the training countries (several phrasings
    each, up to `n_train`), held-out pairs over the held-out ones (`truthful`: see the module)."""
    make, about = OBJECTIVES[name]
    rng = random.Random(derive_seed(seed, "preferences", name))
    train_facts = [f for f in facts if f[0] not in held]
    eval_facts = train_facts if name == "truthful" else [f for f in facts if f[0] in held]
    train = [Example(*make(rng.choice(train_facts), facts, rng, False)) for _ in range(n_train)]
    eval_ = [
        Example(*make(f, facts, rng, True)) for f in shuffled(eval_facts, seed, "pref-eval", name)[:n_eval]
    ]
    return Task(name, "preference", train, eval_, "preference_accuracy", f"<{name}>", about, beta=beta)


def preferences_stream(
    objectives: list[str] | None = None,
    n_train: int = 1000,
    n_eval: int = 100,
    beta: float = DPO_BETA,
    seed: int = 0,
) -> Stream:
    """Alignment, one objective a task: concise -> truthful -> spanish -> polite (DPO, preference accuracy).

    `objectives` lists the tasks (known: concise, truthful, spanish, polite); `beta` is DPO's beta."""
    names = list(objectives or DEFAULT_OBJECTIVES)
    unknown = [n for n in names if n not in OBJECTIVES]
    if unknown:
        raise UserError(f"unknown preference objective {unknown[0]!r} (known: {', '.join(OBJECTIVES)})")
    if len(set(names)) != len(names):
        raise UserError("each preference objective may appear once in the stream")
    if n_train < 1 or n_eval < 1 or beta <= 0:
        raise UserError("preferences: n_train and n_eval must be >= 1 and beta > 0")
    facts = capital_facts()
    countries_ = shuffled([f[0] for f in facts], seed, "pref-held")
    held = set(countries_[: max(1, len(countries_) // 5)])
    tasks = [preference_task(n, facts, held, n_train, n_eval, beta, seed) for n in names]
    return Stream(name="preferences", tasks=tasks)


register_stream(
    "preferences",
    StreamInfo(
        preferences_stream,
        source="countryinfo (PyPI) capitals, pycountry Spanish country names, in templates",
        task_format="[objective] question -> chosen answer over rejected answer (DPO)",
        metric="preference_accuracy (implicit reward margin > 0 against the initial model)",
        model={"preset": "tiny", "max_length": 128},
        train={
            "steps_per_task": 80,
            "batch_size": 8,  # pairs: 16 rows a step
            "lr": 1.0e-3,
            "warmup_steps": 8,
            "schedule": "cosine",
            "eval_every": 20,
            "eval_examples": 100,
            "checkpoint_every": 40,
        },
    ),
)
