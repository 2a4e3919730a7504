"""Fortune cookies from the Debian package `fortunes`: about 40 categories, 15k short quotes and jokes.

Each category is a text file in `FORTUNES_DIR` whose entries are separated by lines holding only `%`.
The `.dat` files beside them are strfile indexes, the `.u8` files links to the same text, and the
`off/` directory (offensive fortunes, another package) is left out.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from lifelong.data.sources.base import SourceBroken, missing, register_corpus
from lifelong.errors import UserError

FORTUNES_DIR = Path("/usr/share/games/fortunes")
NOT_CATEGORIES = {".dat", ".u8"}  # strfile indexes and UTF-8 aliases
_SEPARATOR = re.compile(r"^%[ \t]*$", re.M)
_OVERSTRIKE = re.compile(r"_+\x08+|.\x08")  # "____\b\b\b\bword", "_\bx": underlining for old terminals


def fortune_categories(root: Path | None = None) -> list[str]:
    """The category names, sorted. `root` replaces `FORTUNES_DIR` (e.g. for a test directory)."""
    directory = root or FORTUNES_DIR
    if not directory.is_dir():
        raise missing("the fortune cookies (Debian package fortunes)", "apt-get install fortunes")
    names = sorted(p.name for p in directory.iterdir() if p.is_file() and p.suffix not in NOT_CATEGORIES)
    if not names:
        raise SourceBroken(f"{directory}: no fortune files")
    return names


def read_fortunes(category: str, root: Path | None = None) -> list[str]:
    """The fortunes of one category in file order, each stripped of surrounding blank space."""
    return list(_read(category, root))


def all_fortunes(root: Path | None = None) -> list[str]:
    """Every fortune of every category, categories in sorted order."""
    return [text for category in fortune_categories(root) for text in _read(category, root)]


@lru_cache(maxsize=64)
def _read(category: str, root: Path | None) -> tuple[str, ...]:
    categories = fortune_categories(root)
    if category not in categories:
        raise UserError(f"unknown fortune category {category!r} (known: {', '.join(categories)})")
    path = (root or FORTUNES_DIR) / category
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise SourceBroken(f"{path}: cannot read ({err.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")  # a few old fortune files predate UTF-8
    entries = (_OVERSTRIKE.sub("", entry).strip() for entry in _SEPARATOR.split(text.replace("\r\n", "\n")))
    fortunes = tuple(entry for entry in entries if entry)
    if not fortunes:
        raise SourceBroken(f"{path}: no fortunes (entries separated by '%' lines)")
    return fortunes


register_corpus("fortunes", all_fortunes, "fortune cookies (quotes, jokes, definitions), one per fortune")
