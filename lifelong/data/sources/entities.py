"""Entity names (people, companies, cities, countries) from the PyPI package `faker`, for NER templates.

Each call builds its own seeded `Faker` per locale (never the global one), so a seed always gives
the same names; a seeded `random.Random` picks the locale of each name.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from lifelong.data.sources.base import missing
from lifelong.errors import UserError

KINDS: dict[str, Callable[[Any], str]] = {
    # first + last rather than `name()`, which adds titles and suffixes ("Dr.", "B.Eng.")
    "person": lambda fake: f"{fake.first_name()} {fake.last_name()}",
    "first_name": lambda fake: fake.first_name(),
    "last_name": lambda fake: fake.last_name(),
    "company": lambda fake: fake.company(),
    "city": lambda fake: fake.city(),
    "country": lambda fake: fake.country(),
}
DRAWS_PER_VALUE = 50  # give up when this many draws per requested value have not found enough distinct ones


def entities(kind: str, n: int, seed: int, locales: tuple[str, ...] = ("en_US",)) -> list[str]:
    """`n` distinct names of `kind` (see `KINDS`), in draw order; the same for the same arguments."""
    if kind not in KINDS:
        raise UserError(f"unknown entity kind {kind!r} (known: {', '.join(KINDS)})")
    if not locales:
        raise UserError("entities need at least one Faker locale")
    fakers = [_faker(locale, seed) for locale in locales]
    pick, draw = random.Random(seed), KINDS[kind]
    names: dict[str, None] = {}
    for _ in range(DRAWS_PER_VALUE * n):
        if len(names) == n:
            break
        names[draw(pick.choice(fakers))] = None
    if len(names) < n:
        raise UserError(
            f"faker gives only {len(names)} distinct {kind} names for {', '.join(locales)}, not {n}"
        )
    return list(names)


def _faker(locale: str, seed: int) -> Any:
    try:
        from faker import Faker
    except ImportError:
        raise missing("fake entity names (PyPI package faker)", "pip install faker") from None
    try:
        fake = Faker(locale)
    except AttributeError:
        raise UserError(f"faker has no locale {locale!r}") from None
    fake.seed_instance(seed)
    return fake
