"""Jane Austen's six novels, from the Debian package `r-cran-janeaustenr`, read without R.

The package keeps each novel as an R character vector (one line of text per element) in a lazy-load
database: `data/Rdata.rdx` is a serialized R list mapping each name to (offset, size) in
`data/Rdata.rdb`, where each object is its 4-byte big-endian length followed by a zlib stream of R
serialization. The index is decoded with the PyPI `rdata` package, the novels (plain character
vectors) directly, which is much faster. Installing the .deb pulls in R, so `scripts/fetch_data.sh`
unpacks it into `$LIFELONG_DATA/janeaustenr` instead.
"""

from __future__ import annotations

import re
import struct
import zlib
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any

from lifelong.data.sources.base import SourceBroken, data_dir, missing, register_corpus

R_DATA = Path("usr/lib/R/site-library/janeaustenr/data")  # inside the package (and its `dpkg -x` copy)
LENGTH_HEADER = 4  # bytes before each zlib stream in the .rdb: the uncompressed length
# R serialization (R Internals, "Serialization formats"): header "X\n" + 3 ints, then (version 3) the
# native encoding; an object starts with an int of flags whose low byte is its type.
R_SERIALIZATION_WITH_ENCODING = 3
TYPE_BITS = 0xFF
STRSXP = 16  # a character vector
NA_STRING = -1  # string length that marks NA
LATIN1 = 1 << 2  # CHARSXP flag: the bytes are Latin-1 (otherwise UTF-8 or ASCII)
INSTALL = (
    "scripts/fetch_data.sh (or: apt-get download r-cran-janeaustenr && "
    "dpkg -x r-cran-janeaustenr_*.deb $LIFELONG_DATA/janeaustenr)"
)

# R object name -> title, in order of publication
NOVELS = {
    "sensesensibility": "Sense and Sensibility",
    "prideprejudice": "Pride and Prejudice",
    "mansfieldpark": "Mansfield Park",
    "emma": "Emma",
    "northangerabbey": "Northanger Abbey",
    "persuasion": "Persuasion",
}
_HEADING = re.compile(r"(chapter|volume) [0-9ivxlc]+", re.I)


def austen_novels(root: Path | None = None) -> dict[str, list[str]]:
    """Title -> paragraphs (consecutive non-empty lines joined by spaces), including chapter headings.

    `root` is the `data` directory holding Rdata.rdb/.rdx; by default the installed package's, else
    the copy under `$LIFELONG_DATA/janeaustenr`.
    """
    return {title: list(paragraphs) for title, paragraphs in _novels(root).items()}


def austen_chapters(root: Path | None = None) -> list[str]:
    """One document per chapter of each novel (paragraphs joined by newlines); title pages dropped."""
    chapters: list[list[str]] = []
    for paragraphs in _novels(root).values():
        start = len(chapters)
        for paragraph in paragraphs:
            if _HEADING.fullmatch(paragraph):
                if paragraph.lower().startswith("chapter"):
                    chapters.append([])
            elif len(chapters) > start:
                chapters[-1].append(paragraph)
    return ["\n".join(chapter) for chapter in chapters if chapter]


def find_data() -> Path:
    """The janeaustenr `data` directory (Rdata.rdb/.rdx), or `SourceMissing` saying how to get it."""
    for directory in (Path("/") / R_DATA, data_dir() / "janeaustenr" / R_DATA):
        if (directory / "Rdata.rdx").is_file():
            return directory
    raise missing("Jane Austen's novels (Debian package r-cran-janeaustenr)", INSTALL)


@lru_cache(maxsize=4)
def _novels(root: Path | None) -> dict[str, tuple[str, ...]]:
    try:
        import rdata
    except ImportError:
        raise missing("the PyPI package rdata (reads janeaustenr)", "pip install rdata") from None
    directory = root or find_data()
    index = _parse(rdata, _read(directory / "Rdata.rdx"), directory / "Rdata.rdx")
    db_path = directory / "Rdata.rdb"
    db = _read(db_path)
    novels = {}
    for name, title in NOVELS.items():
        try:
            offset, size = (int(x) for x in index["variables"][name])
        except (KeyError, TypeError, ValueError):
            raise SourceBroken(f"{directory / 'Rdata.rdx'}: no entry for {name!r}") from None
        blob = db[offset : offset + size]
        try:
            raw = zlib.decompress(blob[LENGTH_HEADER:])
        except zlib.error as err:
            raise SourceBroken(f"{db_path}: {name!r} is corrupt ({err})") from None
        if len(raw) != int.from_bytes(blob[:LENGTH_HEADER], "big"):
            raise SourceBroken(f"{db_path}: {name!r} has the wrong length (truncated?)")
        lines = _character_vector(raw)
        if lines is None:
            raise SourceBroken(f"{db_path}: {name!r} is not an R character vector")
        novels[title] = _paragraphs(lines)
        if not novels[title]:
            raise SourceBroken(f"{db_path}: {name!r} has no text")
    return novels


def _paragraphs(lines: list[str]) -> tuple[str, ...]:
    paragraphs, current = [], []
    for line in [*lines, ""]:
        if line.strip():
            current.append(line.strip())
        elif current:
            paragraphs.append(" ".join(" ".join(current).split()))
            current = []
    return tuple(paragraphs)


def _character_vector(raw: bytes) -> list[str] | None:
    """The strings of a serialized R character vector (~20x faster than `rdata`), or None if it is not one."""
    try:
        if raw[:2] != b"X\n":
            return None
        version, pos = struct.unpack_from(">i", raw, 2)[0], 14
        if version == R_SERIALIZATION_WITH_ENCODING:
            pos += 4 + struct.unpack_from(">i", raw, pos)[0]
        flags, length = struct.unpack_from(">ii", raw, pos)
        if flags & TYPE_BITS != STRSXP or length < 0:  # attributes, if any, follow the strings
            return None
        pos += 8
        strings = []
        for _ in range(length):
            flags, size = struct.unpack_from(">ii", raw, pos)
            pos += 8
            if size == NA_STRING:
                strings.append("")
                continue
            if pos + size > len(raw):
                return None
            strings.append(raw[pos : pos + size].decode("latin-1" if flags & LATIN1 else "utf-8"))
            pos += size
        return strings
    except (struct.error, UnicodeDecodeError):
        return None


def _parse(rdata: ModuleType, raw: bytes, path: Path) -> Any:
    """A Python value from R serialization (plain or gzip-compressed, as in an .rds file)."""
    try:
        return rdata.conversion.convert(rdata.parser.parse_data(raw, extension=".rds"))
    except Exception as err:  # rdata raises many kinds of error on bad input
        raise SourceBroken(f"{path}: not readable R data ({type(err).__name__}: {err})") from None


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise SourceBroken(f"{path}: missing (the janeaustenr data is incomplete)") from None
    except OSError as err:
        raise SourceBroken(f"{path}: cannot read ({err.strerror})") from None


register_corpus("austen", austen_chapters, "Jane Austen's six novels (1811-1818), one document per chapter")
