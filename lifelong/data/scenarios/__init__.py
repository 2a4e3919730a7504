"""The built-in scenario streams, registered on import (see `lifelong streams`)."""

from lifelong.data.scenarios import (
    benchmarks,
    classification,
    facts,
    general,
    instructions,
    ner,
    preferences,
    pretraining,
    relations,
    translation,
)

__all__ = [
    "benchmarks",
    "classification",
    "facts",
    "general",
    "instructions",
    "ner",
    "preferences",
    "pretraining",
    "relations",
    "translation",
]
