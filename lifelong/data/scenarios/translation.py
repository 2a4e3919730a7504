"""Machine translation with language pairs arriving: English -> French and English -> German country
names (pycountry's ISO 3166 translations), then English -> Spanish Bible verses (KJV and Reina-Valera
1909 share their verse numbering). Scored by chrF of the greedy translation (BLEU reported
next to it). Held-out verses and names are never trained on.
"""

from __future__ import annotations

from lifelong.data.registry import StreamInfo, register_stream
from lifelong.data.scenarios.common import TASK_TRAIN, TEXT_MODEL, split
from lifelong.data.sources.countries import country_names
from lifelong.data.sources.sword import aligned_verses
from lifelong.data.task import Example, Stream, Task
from lifelong.errors import UserError


def verse_pairs(max_words: int) -> list[tuple[str, str]]:
    """(English, Spanish) verses of at most `max_words` words on both sides."""
    pairs = [(en.text, es.text) for en, es in aligned_verses("kjv", "rv1909")]
    return [(en, es) for en, es in pairs if len(en.split()) <= max_words and len(es.split()) <= max_words]


def name_pairs(lang: str) -> list[tuple[str, str]]:
    return sorted(country_names(lang).items())


def translation_task(name: str, pairs: list[tuple[str, str]], n_train: int, n_eval: int, seed: int) -> Task:
    train, eval_ = split(pairs, n_eval, seed, "translation", name)
    return Task(
        name=name,
        kind="prompt_target",
        train=[Example(src, tgt) for src, tgt in train[:n_train]],
        eval=[Example(src, tgt) for src, tgt in eval_],
        metric="chrf",
        token=f"<{name}>",
        description=f"translation {name}",
    )


def translation_stream(
    pairs: list[str] | tuple[str, ...] = ("en-fr", "en-de", "en-es"),
    n_train: int = 5000,
    n_eval: int = 100,
    max_words: int = 16,
    seed: int = 0,
) -> Stream:
    """Translation, a language pair per task: en->fr names -> en->de names -> en->es verses."""
    tasks = []
    for name in pairs:
        source, _, target = name.partition("-")
        if source != "en" or not target:
            raise UserError(f"translation pair {name!r}: expected en-<language>, e.g. en-es")
        rows = verse_pairs(max_words) if target == "es" else name_pairs(target)
        n_held = min(n_eval, len(rows) // 5)  # a short list of names keeps four fifths to learn from
        tasks.append(translation_task(name, rows, n_train, n_held, seed))
    return Stream(name="translation", tasks=tasks)


register_stream(
    "translation",
    StreamInfo(
        translation_stream,
        source="KJV + Reina-Valera 1909 (Debian sword-text-*), pycountry's country-name translations",
        task_format="[en-xx] English text -> translation",
        metric="chrf (BLEU also reported)",
        model=TEXT_MODEL,
        train={**TASK_TRAIN, "eval_examples": 100},
    ),
)
