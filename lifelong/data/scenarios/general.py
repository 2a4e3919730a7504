"""The `general` suite: what a pretrained model knew before it was fine-tuned, as small evaluation sets.

Mostly used through `keep: general` in a stream's config: the sets' held-out examples become extra
columns of the accuracy matrix, scored for the initial model and after every task, never trained
on. It is also registered as a stream (`stream: general`), whose tasks then train on their own
training splits. Built offline from installed data, deterministic given the seed:

- capitals   "What is the capital of France? Reply with the city's name only." -> "Paris"
             (countryinfo; exact match)
- currencies "What is the currency of Japan? Reply with the currency's name only." -> "Yen"
             (countryinfo + pycountry names; exact match)
- arithmetic "What is 23 + 48? Reply with the number only." -> "71"
             (two-digit sums and differences; exact match)
- definitions a WordNet noun and four definitions lettered A-D -> the letter of its own (accuracy
  over the letters: each letter's likelihood is scored, the best one is the answer)
- format     "Reply with the word in upper case: dog" -> "DOG" (and lower case, twice, in quotes)
- english    held-out modern English text (WEB, never trained by `lifelong pretrain`; -loss)
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable

from lifelong.data.registry import StreamInfo, register_stream
from lifelong.data.scenarios.common import TASK_TRAIN, TEXT_MODEL, pairs_task, shuffled, text_task
from lifelong.data.sources.countries import countries, currency_name
from lifelong.data.sources.wordnet import wordnet_glosses
from lifelong.data.task import Stream, Task
from lifelong.errors import UserError
from lifelong.seeding import derive_seed

Pairs = list[tuple[str, str]]  # (prompt, target)
MAX_DEFINITION_WORDS = 8  # short definitions keep four of them inside a small model's context
FORMATS = {  # instruction -> how the answer is made from the word
    "Reply with the word in upper case: {w}": str.upper,
    "Reply with the word in lower case: {W}": str.lower,
    "Reply with the word twice, separated by a space: {w}": lambda w: f"{w} {w}",
    "Reply with the word in double quotes: {w}": lambda w: f'"{w}"',
}


def capital_pairs(seed: int) -> Pairs:
    return [
        (f"What is the capital of {c.name}? Reply with the city's name only.", c.capital)
        for c in countries()
        if c.capital
    ]


def currency_pairs(seed: int) -> Pairs:
    named = [(c.name, currency_name(c.currencies[0])) for c in countries() if c.currencies]
    # a currency pycountry does not name comes back as its bare code ("XYZ"): left out
    return [
        (f"What is the currency of {n}? Reply with the currency's name only.", cur)
        for n, cur in named
        if cur != cur.upper()
    ]


def arithmetic_pairs(seed: int) -> Pairs:
    """Every sum of two two-digit numbers and every non-negative difference, a seeded 4,000 of them."""
    sums = [
        (f"What is {a} + {b}? Reply with the number only.", str(a + b))
        for a in range(10, 100)
        for b in range(10, 100)
    ]
    diffs = [
        (f"What is {a} - {b}? Reply with the number only.", str(a - b))
        for a in range(10, 100)
        for b in range(10, a + 1)
    ]
    return shuffled(sums, seed, "sums")[:2000] + shuffled(diffs, seed, "diffs")[:2000]


def _nouns() -> list[tuple[str, str]]:
    """(word, short definition) of WordNet nouns that are one plain word (first sense only)."""
    seen: dict[str, str] = {}
    for word, definition in wordnet_glosses("noun"):
        plain = word.isalpha() and word.islower() and 3 <= len(word) <= 10
        short = len(definition.split()) <= MAX_DEFINITION_WORDS and word not in definition
        if plain and short and word not in seen:
            seen[word] = definition
    return sorted(seen.items())


def format_pairs(seed: int) -> Pairs:
    words = shuffled([w for w, _ in _nouns()], seed, "format-words")[:4000]
    instructions = list(FORMATS)
    out = []
    for i, word in enumerate(words):
        instruction = instructions[i % len(instructions)]
        prompt = instruction.format(w=word, W=word.upper())
        out.append((prompt, FORMATS[instruction](word)))
    return out


def definition_pairs(seed: int, n_options: int = 4) -> Pairs:
    """A word and `n_options` definitions (its own and others' at random), lettered; the answer is
    its own's letter, each letter equally often."""
    if not 2 <= n_options <= len(string.ascii_uppercase):
        raise UserError(f"general: n_options must be in 2..26, got {n_options}")
    nouns = shuffled(_nouns(), seed, "definition-words")[:4000]
    rng = random.Random(derive_seed(seed, "definition-options"))
    letters = string.ascii_uppercase[:n_options]
    out = []
    for i, (word, own) in enumerate(nouns):
        drawn = dict.fromkeys(d for _, d in rng.sample(nouns, n_options + 2) if d != own)  # distinct
        others = list(drawn)[: n_options - 1]
        options = others[: i % n_options] + [own] + others[i % n_options :]  # answer letter i mod n
        lines = [f"{letter}. {d}" for letter, d in zip(letters, options, strict=True)]
        prompt = "\n".join([f'Which definition fits the word "{word}"?', *lines, "Answer with the letter:"])
        out.append((prompt, letters[i % n_options]))
    return out


# set name -> (builder of (prompt, target) pairs from a seed, metric, description)
SETS: dict[str, tuple[Callable[[int], Pairs], str, str]] = {
    "capitals": (capital_pairs, "answer_contains", "capital of a country (countryinfo)"),
    "currencies": (currency_pairs, "answer_contains", "currency of a country (countryinfo, pycountry)"),
    "arithmetic": (arithmetic_pairs, "answer_contains", "two-digit sums and differences"),
    "definitions": (definition_pairs, "accuracy", "letter of a WordNet noun's definition among four"),
    "format": (format_pairs, "exact_match", "a word in the requested format (upper case, quotes...)"),
}
TEXT_SET = "english"  # held-out text of `text_corpus`, scored by -loss
DEFAULT_SETS = (*SETS, TEXT_SET)


def qa_task(name: str, n_train: int, n_eval: int, seed: int, n_options: int) -> Task:
    make, metric, about = SETS[name]
    pairs = make(seed, n_options) if name == "definitions" else make(seed)
    return pairs_task(name, pairs, n_train, n_eval, seed, metric, about, "general")


def general_stream(
    sets: list[str] | tuple[str, ...] = DEFAULT_SETS,
    n_eval: int = 50,
    n_train: int = 1000,
    n_options: int = 4,
    text_corpus: str = "web",
    text_chars: int = 4000,
    seed: int = 0,
) -> Stream:
    """What a pretrained model knows: capitals, currencies, arithmetic, definitions, format, English.

    Meant for `keep: general` (evaluated, never trained); `n_eval` examples a set (`text_chars`
    characters of held-out text), `sets` picks some of them."""
    unknown = [s for s in sets if s not in DEFAULT_SETS]
    if unknown:
        raise UserError(f"general: unknown set {unknown[0]!r} (known: {', '.join(DEFAULT_SETS)})")
    if n_eval < 1 or text_chars < 1:
        raise UserError("general: n_eval and text_chars must be positive")
    tasks = []
    for name in dict.fromkeys(sets):
        if name == TEXT_SET:
            about = f"held-out English text ({text_corpus})"
            tasks.append(text_task(TEXT_SET, text_corpus, text_chars, 100 * text_chars, seed, about))
        else:
            tasks.append(qa_task(name, n_train, n_eval, seed, n_options))
    return Stream(name="general", tasks=tasks)


register_stream(
    "general",
    StreamInfo(
        general_stream,
        source="countryinfo + pycountry (PyPI), WordNet (Debian wordnet-base), generated sums, WEB Bible",
        task_format="question -> short answer; held-out text (use as `keep: general`: never trained)",
        metric="answer_contains (capitals, currencies, arithmetic), exact_match (format), accuracy, loss",
        model=TEXT_MODEL,
        train=TASK_TRAIN,
    ),
)
