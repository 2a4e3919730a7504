"""The built-in scenario streams, registered on import (see `lifelong streams`)."""

from lifelong.data.scenarios import (
    benchmarks,
    classification,
    edits,
    facts,
    general,
    instructions,
    ner,
    preferences,
    pretraining,
    relations,
    tools,
    translation,
)

__all__ = [
    "benchmarks",
    "classification",
    "edits",
    "facts",
    "general",
    "instructions",
    "ner",
    "preferences",
    "pretraining",
    "relations",
    "tools",
    "translation",
]
