"""Small helpers shared by the scenario streams: deterministic splits and size caps."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TypeVar

from lifelong.data.sources import corpus_split
from lifelong.data.split import seeded_split
from lifelong.data.task import Example, Task
from lifelong.errors import UserError
from lifelong.seeding import derive_seed

T = TypeVar("T")

# What `lifelong run --stream NAME` starts from: the English base of `lifelong pretrain en-tiny`, and
# schedules that run a stream of 2-4 tasks in a few minutes on a 2-core CPU.
TEXT_MODEL = {"base": "en-tiny"}
TEXT_TRAIN = {  # continual pretraining: rows of 128 tokens
    "steps_per_task": 300,
    "batch_size": 16,
    "lr": 1.0e-3,
    "warmup_steps": 30,
    "schedule": "cosine",
    "eval_every": 100,
    "checkpoint_every": 150,
}
TASK_TRAIN = {**TEXT_TRAIN, "batch_size": 32, "eval_examples": 200}  # short prompt -> target rows


def shuffled(items: Sequence[T], seed: int, *parts: object) -> list[T]:
    """A seeded permutation of `items` (the same for the same seed and parts, in every process)."""
    out = list(items)
    random.Random(derive_seed(seed, *parts)).shuffle(out)
    return out


def split(items: Sequence[T], n_eval: int, seed: int, *parts: object) -> tuple[list[T], list[T]]:
    """(train, eval): a seeded shuffle, the first `n_eval` held out, both in shuffled order."""
    if len(items) <= n_eval:
        raise UserError(f"{'/'.join(map(str, parts))}: {len(items)} examples, too few to hold out {n_eval}")
    return seeded_split(items, n_eval, seed, "split", *parts, keep_order=False)


def cap_chars(docs: list[str], max_chars: int) -> list[str]:
    """The first documents up to `max_chars` characters in all (the last one cut to fit)."""
    out, total = [], 0
    for doc in docs:
        if total >= max_chars:
            break
        out.append(doc[: max_chars - total])
        total += len(out[-1])
    return out


def text_task(name: str, corpus: str, eval_chars: int, train_chars: int, seed: int, about: str) -> Task:
    """A continual-pretraining task on a registered corpus: training text from the corpus's training
    documents, held-out text from its held-out ones (`corpus_split`: never trained on, not even by
    `lifelong pretrain`), each a seeded choice of whole documents up to the character budget."""
    train_docs, held_docs = corpus_split(corpus)
    return docs_task(name, train_docs, held_docs, eval_chars, train_chars, seed, about)


def docs_task(
    name: str,
    train_docs: list[str],
    eval_docs: list[str],
    eval_chars: int,
    train_chars: int,
    seed: int,
    about: str,
) -> Task:
    eval_docs = cap_chars(shuffled(eval_docs, seed, "eval-docs", name), eval_chars)
    train_docs = cap_chars(shuffled(train_docs, seed, "docs", name), train_chars)
    if not train_docs or not eval_docs:
        raise UserError(f"task {name!r}: no text to train on or to hold out")
    return Task(
        name=name,
        kind="text",
        train=[Example(d) for d in train_docs],
        eval=[Example(d) for d in eval_docs],
        metric="loss",
        token=f"<{name}>",
        description=about,
    )


def pairs_task(
    name: str,
    pairs: Sequence[tuple[str, str]],
    n_train: int,
    n_eval: int,
    seed: int,
    metric: str,
    about: str,
    stream: str,
) -> Task:
    """A prompt -> target task of distinct (prompt, target) pairs: `n_eval` held out by a seeded split
    of `stream`'s, up to `n_train` of the rest trained on."""
    train, eval_ = split(sorted(set(pairs)), n_eval, seed, stream, name)
    return Task(
        name=name,
        kind="prompt_target",
        train=[Example(p, t) for p, t in train[:n_train]],
        eval=[Example(p, t) for p, t in eval_],
        metric=metric,
        token=f"<{name}>",
        description=about,
    )


MAX_CHARS_PER_WORD = 4  # a clipped text keeps at most this many characters per word allowed


def clip_words(text: str, max_words: int) -> str:
    """`text` on one line, cut to its first `max_words` words (and to 4 characters a word on average,
    so that long words and symbols cannot blow a short context)."""
    return " ".join(text.split()[:max_words])[: MAX_CHARS_PER_WORD * max_words]


def labelled_task(
    name: str,
    rows: list[tuple[str, str]],
    n_train: int,
    n_eval: int,
    seed: int,
    about: str,
    metric: str = "exact_match",
) -> Task:
    """A prompt -> label task with the same number of examples of every label (as many as the rarest
    label allows, up to `n_train` + `n_eval` per label), held-out rows disjoint from training rows."""
    by_label: dict[str, list[str]] = {}
    for text, label in rows:
        by_label.setdefault(label, []).append(text)
    per_label = min(n_train + n_eval, *(len(set(texts)) for texts in by_label.values()))
    n_eval_each = max(1, round(per_label * n_eval / (n_train + n_eval)))
    train, eval_ = [], []
    for label in sorted(by_label):
        texts = shuffled(sorted(set(by_label[label])), seed, "label", name, label)[:per_label]
        eval_ += [Example(t, label) for t in texts[:n_eval_each]]
        train += [Example(t, label) for t in texts[n_eval_each:]]
    return Task(
        name=name,
        kind="prompt_target",
        train=shuffled(train, seed, "order", name),
        eval=shuffled(eval_, seed, "order-eval", name),
        metric=metric,
        token=f"<{name}>",
        description=about,
    )
