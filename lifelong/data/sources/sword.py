"""Bibles in SWORD zText format (Debian `sword-text-kjv`, `sword-text-sparv`, `sword-text-web`).

Read directly, without libsword. Each testament (`ot`, `nt`) is three files in the module directory:
`.bzz` holds zlib blocks, `.bzs` lists them (12-byte records: u32 offset, u32 size, u32 uncompressed
size) and `.bzv` has one 10-byte record per verse slot (u32 block, u32 offset in the uncompressed
block, u16 size). Slots run in canonical order: a module heading and a testament heading, then for
each book an intro slot and for each chapter an intro slot followed by its verses (see
`versification`). Verse text is OSIS markup; `clean` turns it into plain text.

    >>> read_bible("kjv")[0]
    Verse(book='Genesis', chapter=1, verse=1, text='In the beginning God created the heaven and the earth.')
"""

from __future__ import annotations

import html
import re
import struct
import zlib
from dataclasses import dataclass
from functools import lru_cache, partial
from itertools import groupby
from pathlib import Path

from lifelong.data.sources.base import SourceBroken, missing, register_corpus
from lifelong.data.sources.versification import Book, versification
from lifelong.errors import UserError

SWORD_ROOT = Path("/usr/share/sword/modules/texts/ztext")
HEADING_SLOTS = 2  # slots before the first book of a testament: module heading, testament heading
BLOCK = struct.Struct("<III")  # .bzs record: offset in .bzz, compressed size, uncompressed size
SLOT = struct.Struct("<IIH")  # .bzv record: block number, offset in the uncompressed block, size


@dataclass(frozen=True)
class Bible:
    directory: str  # module directory under SWORD_ROOT
    package: str  # Debian package that installs it
    versification: str
    title: str
    about: str  # language and age, for the corpus description


BIBLES = {
    "kjv": Bible("engKJV2006eb", "sword-text-kjv", "kjv", "King James Bible", "1769 English"),
    "rv1909": Bible("spaRV1909eb", "sword-text-sparv", "kjv", "Reina-Valera 1909 Bible", "Spanish"),
    "web": Bible("engWEB2015eb", "sword-text-web", "nrsva", "World English Bible", "modern English"),
}


@dataclass(frozen=True)
class Verse:
    book: str
    chapter: int
    verse: int
    text: str


# Dropped with their content: notes, speaker labels and the editors' (non-canonical) headings.
_DROPPED = re.compile(r"<(note|speaker|title)\b([^>]*)(?<!/)>.*?</\1>", re.S)
# The end of a book: anything after it in the same slot (WEB's glossary after Rev 22:21) is not verse.
_BOOK_END = re.compile(r"<div\b(?=[^>]*\beID=)(?=[^>]*\btype=\"book\")[^>]*>.*", re.S)
_EMPTY_TAG = re.compile(r"<[^>]*/>")  # milestones (line and paragraph breaks): become a space
_TAG = re.compile(r"<[^>]*>")  # inline markup around words (<w>, <q>, <transChange>): removed
_USFM = re.compile(r"\\\+?[a-z]+\d*\*?|¶")  # stray USFM markers (KJV's `\nd LORD`) and KJV's paragraph sign
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.;:!?)])")


def _drop(match: re.Match[str]) -> str:
    return match.group(0) if 'canonical="true"' in match.group(2) else " "


def clean(osis: str) -> str:
    """Plain text of OSIS verse markup: notes and headings dropped, tags and entities resolved."""
    text = _BOOK_END.sub("", _DROPPED.sub(_drop, osis))
    text = html.unescape(_USFM.sub(" ", _TAG.sub("", _EMPTY_TAG.sub(" ", text))))
    return _SPACE_BEFORE_PUNCT.sub(r"\1", " ".join(text.split()))


def read_bible(module: str, root: Path | None = None) -> list[Verse]:
    """The non-empty verses of a Bible (`kjv`, `rv1909`, `web`) in canonical order.

    `root` replaces the SWORD module directory (`SWORD_ROOT`), e.g. for a test module.
    """
    return list(_read_bible(module, root))


def aligned_verses(a: str, b: str, root: Path | None = None) -> list[tuple[Verse, Verse]]:
    """Verses with the same reference in Bibles `a` and `b`, non-empty in both, in `a`'s order."""
    other = {(v.book, v.chapter, v.verse): v for v in _read_bible(b, root)}
    return [(v, other[key]) for v in _read_bible(a, root) if (key := (v.book, v.chapter, v.verse)) in other]


def bible_chapters(module: str) -> list[str]:
    """One document per chapter: its verses joined by spaces."""
    chapters = groupby(_read_bible(module, None), key=lambda v: (v.book, v.chapter))
    return [" ".join(v.text for v in verses) for _, verses in chapters]


@lru_cache(maxsize=8)
def _read_bible(module: str, root: Path | None) -> tuple[Verse, ...]:
    if module not in BIBLES:
        raise UserError(f"unknown Bible {module!r} (known: {', '.join(BIBLES)})")
    bible = BIBLES[module]
    directory = (root or SWORD_ROOT) / bible.directory
    if not directory.is_dir():
        package = bible.package
        raise missing(f"the {bible.title} (Debian package {package})", f"apt-get install {package}")
    books = versification(bible.versification)
    present = [t for t in ("ot", "nt") if (directory / f"{t}.bzv").exists()]
    if not present:
        raise SourceBroken(f"{directory}: no ot.bzv or nt.bzv in the SWORD module")
    verses = tuple(v for t in present for v in _read_testament(directory / t, books[t]) if v.text)
    if not verses:
        raise SourceBroken(f"{directory}: the SWORD module has no verse text")
    return verses


def _read_testament(prefix: Path, books: tuple[Book, ...]) -> list[Verse]:
    index, data = _read(prefix, ".bzv"), _read(prefix, ".bzz")
    blocks = list(BLOCK.iter_unpack(_whole_records(_read(prefix, ".bzs"), BLOCK, prefix, ".bzs")))
    slots = list(SLOT.iter_unpack(_whole_records(index, SLOT, prefix, ".bzv")))
    refs: list[tuple[str, int, int] | None] = [None] * HEADING_SLOTS
    for book, chapters in books:
        refs.append(None)
        for chapter, n_verses in enumerate(chapters, 1):
            refs += [None] + [(book, chapter, verse) for verse in range(1, n_verses + 1)]
    if len(slots) != len(refs):
        raise SourceBroken(f"{prefix}.bzv: {len(slots)} verse slots where the versification has {len(refs)}")
    texts: dict[int, bytes] = {}
    verses = []
    for ref, (block, offset, size) in zip(refs, slots, strict=True):
        if ref is None or size == 0:
            continue
        if block not in texts:
            texts[block] = _decompress(data, blocks, block, prefix)
        raw, where = texts[block][offset : offset + size], f"{ref[0]} {ref[1]}:{ref[2]}"
        if len(raw) != size:
            raise SourceBroken(f"{prefix}.bzv: {where} points past the end of block {block}")
        try:
            verses.append(Verse(*ref, text=clean(raw.decode("utf-8"))))
        except UnicodeDecodeError:
            raise SourceBroken(f"{prefix}.bzz: {where} is not UTF-8 text") from None
    return verses


def _decompress(data: bytes, blocks: list[tuple[int, int, int]], block: int, prefix: Path) -> bytes:
    if block >= len(blocks):
        raise SourceBroken(f"{prefix}.bzv: refers to block {block}, but {prefix}.bzs lists {len(blocks)}")
    offset, size, full_size = blocks[block]
    if offset + size > len(data):
        raise SourceBroken(f"{prefix}.bzz: block {block} runs past the end of the file (truncated?)")
    try:
        text = zlib.decompress(data[offset : offset + size])
    except zlib.error as err:
        raise SourceBroken(f"{prefix}.bzz: block {block} is corrupt ({err})") from None
    if len(text) != full_size:
        raise SourceBroken(f"{prefix}.bzz: block {block} has {len(text)} bytes, the index says {full_size}")
    return text


def _read(prefix: Path, suffix: str) -> bytes:
    path = prefix.with_suffix(suffix)
    try:
        return path.read_bytes()
    except OSError as err:
        raise SourceBroken(f"{path}: cannot read ({err.strerror})") from None


def _whole_records(raw: bytes, record: struct.Struct, prefix: Path, suffix: str) -> bytes:
    if len(raw) % record.size:
        raise SourceBroken(f"{prefix}{suffix}: {len(raw)} bytes, not a whole number of records (truncated?)")
    return raw


for _name, _bible in BIBLES.items():
    register_corpus(
        _name, partial(bible_chapters, _name), f"{_bible.title} ({_bible.about}), one document per chapter"
    )
