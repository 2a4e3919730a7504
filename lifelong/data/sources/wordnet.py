"""WordNet 3.0 relations, parsed from the Debian package `wordnet-base` (`/usr/share/wordnet/data.*`).

nltk's reader needs a `lexnames` file Debian leaves out, so the data files are read directly. After a
license header (lines starting with two spaces), each line is one synset:
`offset lexfile pos n_words(hex) [word lex_id]... n_pointers [symbol offset pos source/target]... | gloss`.
A pointer's source/target is `0000` between whole synsets, or two hex word numbers between words
(lexical pointers, such as antonyms).
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from lifelong.data.sources.base import SourceBroken, missing
from lifelong.errors import UserError

WORDNET_DIR = Path("/usr/share/wordnet")
PARTS_OF_SPEECH = ("noun", "verb", "adj", "adv")  # data.<pos> files
POINTER_POS = {"n": "noun", "v": "verb", "a": "adj", "s": "adj", "r": "adv"}  # "s": adjective satellite
RELATIONS = {  # name -> WordNet pointer symbol
    "hypernym": "@",
    "instance_hypernym": "@i",
    "hyponym": "~",
    "part_holonym": "#p",
    "part_meronym": "%p",
    "member_holonym": "#m",
    "member_meronym": "%m",
    "substance_holonym": "#s",
    "substance_meronym": "%s",
    "antonym": "!",
    "entailment": "*",
}
HEADER = "  "  # license lines start with two spaces
WHOLE_SYNSET = "0000"  # a pointer's source/target field when it links synsets rather than words
_ADJ_MARKER = re.compile(r"\([a-z]+\)$")  # "able(a)": syntactic marker on some adjectives

Synset = tuple[tuple[str, ...], tuple[str, ...]]  # words, pointer fields (4 per pointer)


def wordnet_relations(relation: str, pos: str = "noun", root: Path | None = None) -> list[tuple[str, str]]:
    """(word, related word) for each pointer of `relation` from synsets of `pos`, in file order.

    Words are a synset's first lemma (underscores become spaces), or for a lexical pointer (antonym)
    the very words it links. Repeated pairs are kept once.
    """
    if relation not in RELATIONS:
        raise UserError(f"unknown WordNet relation {relation!r} (known: {', '.join(RELATIONS)})")
    if pos not in PARTS_OF_SPEECH:
        raise UserError(f"unknown part of speech {pos!r} (known: {', '.join(PARTS_OF_SPEECH)})")
    symbol, pairs = RELATIONS[relation], {}
    for words, pointers in _synsets(pos, root).values():
        for i in range(0, len(pointers), 4):
            if pointers[i] != symbol:
                continue
            offset, target_pos, source_target = pointers[i + 1 : i + 4]
            source, target = (1, 1) if source_target == WHOLE_SYNSET else divmod(int(source_target, 16), 256)
            try:
                target_words = _synsets(POINTER_POS[target_pos], root)[offset][0]
                pairs[(_lemma(words[source - 1]), _lemma(target_words[target - 1]))] = None
            except (KeyError, IndexError):
                where = (root or WORDNET_DIR) / f"data.{pos}"
                raise SourceBroken(f"{where}: pointer {symbol} {offset} {target_pos} leads nowhere") from None
    return list(pairs)


def _lemma(word: str) -> str:
    return _ADJ_MARKER.sub("", word).replace("_", " ")


@lru_cache(maxsize=8)
def _synsets(pos: str, root: Path | None) -> dict[str, Synset]:
    """Synset offset -> (its words as written, its pointer fields: symbol, offset, pos, source/target)."""
    directory = root or WORDNET_DIR
    if not directory.is_dir():
        raise missing("WordNet (Debian package wordnet-base)", "apt-get install wordnet-base")
    path = directory / f"data.{pos}"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise SourceBroken(f"{path}: cannot read ({err})") from None
    synsets = {}
    for number, line in enumerate(lines, 1):
        if line.startswith(HEADER) or not line.strip():
            continue
        fields = line.partition(" | ")[0].split()
        try:
            n_words = int(fields[3], 16)
            words, n_pointers = fields[4 : 4 + 2 * n_words : 2], int(fields[4 + 2 * n_words])
        except (ValueError, IndexError):
            n_words, words, n_pointers = -1, [], 0
        pointers = fields[5 + 2 * n_words :]
        if len(words) != n_words or len(pointers) < 4 * n_pointers:
            raise SourceBroken(f"{path}: line {number} is not a WordNet synset")
        synsets[fields[0]] = (tuple(words), tuple(pointers[: 4 * n_pointers]))
    if not synsets:
        raise SourceBroken(f"{path}: no synsets")
    return synsets


def wordnet_glosses(pos: str = "noun", root: Path | None = None) -> list[tuple[str, str]]:
    """(first lemma, definition) of each synset of `pos`, in file order: the gloss up to its first
    `;` (what follows is example sentences), underscores in the lemma become spaces."""
    if pos not in PARTS_OF_SPEECH:
        raise UserError(f"unknown part of speech {pos!r} (known: {', '.join(PARTS_OF_SPEECH)})")
    return list(_glosses(pos, root))


@lru_cache(maxsize=8)
def _glosses(pos: str, root: Path | None) -> tuple[tuple[str, str], ...]:
    _synsets(pos, root)  # checks the directory and the file's format first
    path = (root or WORDNET_DIR) / f"data.{pos}"
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith(HEADER) or " | " not in line:
            continue
        fields, _, gloss = line.partition(" | ")
        definition = gloss.split(";")[0].strip()
        if definition:
            out.append((_lemma(fields.split()[4]), definition))
    return tuple(out)
