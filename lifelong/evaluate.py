"""Deterministic, batched evaluation of every task of a stream: one row of the accuracy matrix.

Scores are "higher is better" everywhere:
- exact_match: the answer the model gives, compared as text. Greedy generation (KV cache) up to a few
  tokens past the longest target, cut at the first end-of-sequence (or end-of-turn) token and at the
  first newline, decoded and normalised (`normalise`: whitespace collapsed, case folded, trailing
  punctuation dropped), then compared with the normalised target. A model that answers right and
  keeps talking on the next line scores; one that answers wrong does not;
- answer_contains: as exact_match, but the target's words need only appear together in the answer
  (a chat model's "The capital of Austria is Vienna." answers "Vienna");
- exact_match_strict: the greedy generation compared with the target token for token, eos included
  (it also asks whether the model stops right after the answer);
- accuracy: the label with the highest log-likelihood among the task's labels (each prompt read once,
  its KV cache shared by the labels: see docs/metrics.md for its cost);
- loss: minus the mean next-token loss (nats per token) on the held-out text;
- chrf, bleu, entity_f1: greedy generation (KV cache, up to twice the longest target), decoded and
  scored against the decoded targets (lifelong/scoring.py); a chrF task also reports BLEU;
- reliability (edit tasks): exact match, as above, of the new target on the edit prompts, next to
  generality (the same on their paraphrases, never trained) and locality (the fraction of neighbour
  prompts whose answer is still the initial model's own, `EncodedTask.base_answers`, computed once
  before any training by `set_eval_references` from the same generations: the initial model scores 1);
- preference_accuracy: the fraction of held-out pairs whose implicit reward margin
  beta * ((pi_c - ref_c) - (pi_r - ref_r)) is > 0 (lifelong/preference.py), next to the mean margin
  (`reward_margin`). The reference is fixed: the initial model, before any training of the stream
  (its log-probs are computed once, `EncodedSet.reference`), so every row of the matrix is measured
  against the same baseline and a fall down a column is forgetting, not a moved reference. The initial
  model itself scores 0 (every margin is 0).
- tool_success: the model calls a tool and answers with its result (lifelong/tools/executor.py has
  the format). Greedy generation after the question, cut where the call closes (`</call>`); the
  executor runs the call and its result's tokens are appended; greedy generation goes on to the
  answer, which is scored like exact_match. A generation that does not start with a well-formed call
  (`<call>`, a known tool, arguments in its syntax) scores 0, and the fraction of those is reported
  next to it as `malformed_calls` (lower is better). Both generations are batched.
Fixed examples, no sampling, `no_grad`, and the model's train/eval mode is restored afterwards. The
first examples' answers can be collected next to their targets (`predictions`), from the same
generations that are scored.

Two things can change a task's eval rows between evaluations, and then the rows are written again
from the held-out examples' text, in the task's row format (its `RowWriter`): a revised answer (a
later task restated the fact: `Task.revisions`, in effect once their task has arrived, `newest`), and
the methods' `eval_context` (`contexts(task_index, questions)`: e.g. retrieved documents put in front
of each question). Kept sets are scored as they are.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from transformers import DynamicCache

from lifelong.data.batching import EncodedStream, EncodedTask, pad_rows
from lifelong.distributed import gather
from lifelong.errors import UserError
from lifelong.losses import next_token_loss
from lifelong.preference import reference_logprobs, reward_margins
from lifelong.sampling import cache_keyword, generate
from lifelong.scoring import TEXT_METRICS
from lifelong.tools.executor import (
    CALL_CLOSE,
    CALL_OPEN,
    RESULT_CLOSE,
    RESULT_OPEN,
    execute,
    find_call,
    result_segment,
    split_target,
)

# Scores computed from the same generations as a task's metric and reported next to it.
ALSO_REPORTED = {
    "chrf": ("bleu",),
    "preference_accuracy": ("reward_margin",),
    "tool_success": ("malformed_calls",),
    "reliability": ("generality", "locality"),
}
# Characters dropped from the end of an answer and of its target before they are compared.
TRAILING_PUNCTUATION = ".,;:!?"
# Tokens generated past the longest target (at least), so an answer can be followed by its stop token
# and a little more: a model that answers right must not be cut off mid-answer.
ANSWER_SLACK = 4
SENTENCE_SLACK = 24  # answer_contains: room for the sentence around the answer
WORD = re.compile(r"\w+")


@dataclass
class Scored:
    """A task's score, and per example the text the model answered and whether it counted as right
    (None where the metric scores the whole set rather than each answer, e.g. chrF)."""

    score: float
    answers: list[str] | None = None
    correct: list[bool] | None = None
    rows: tuple[list[list[int]], list[list[int]]] | None = None  # (prompts, targets) scored, if rewritten


# `contexts(task_index, questions)`: the methods' rewritten eval prompts of a task, or None (unchanged).
Contexts = Callable[[int, list[str]], "list[str] | None"]


def no_route(task_index: int) -> AbstractContextManager[None]:
    return nullcontext()


def no_context(task_index: int, questions: list[str]) -> list[str] | None:
    return None


@torch.no_grad()
def evaluate_stream(
    model: torch.nn.Module,
    stream: EncodedStream,
    batch_size: int = 512,
    max_examples: int | None = None,
    route: Callable[[int], AbstractContextManager[None]] = no_route,
    details: dict[str, dict[str, float]] | None = None,
    predictions: dict[str, list[dict[str, Any]]] | None = None,
    n_predictions: int = 8,
    newest: int = -1,
    contexts: Contexts = no_context,
    shard: tuple[int, int] = (0, 1),
) -> list[float]:
    """The score of every task of the stream, in stream order, then of each kept set (`stream.kept`,
    scored with the model as it is). Task i is scored inside `route(i)`: the methods' choice of
    weights for task i (e.g. its own adapter), restored afterwards, on prompts rewritten by
    `contexts(i, questions)` and against the answers revised by the tasks up to `newest` (the newest
    task that has arrived; -1: none, the initial model). Scores reported next to a task's
    own (ALSO_REPORTED) go to `details[task name]`; with `predictions`, the first `n_predictions`
    examples of each generated or label-scored task go to `predictions[task name]` as {prompt,
    target, prediction, correct} records.

    `shard` = (rank, world) under several processes: each process scores every world-th set (tasks
    then kept sets, from its rank on) and the results are gathered, so every process returns all of
    them, each computed exactly as one process computes it."""
    rank, world = shard
    sets = [(i, task) for i, task in enumerate(stream.tasks)] + [(None, task) for task in stream.kept]
    was_training = model.training
    model.eval()
    try:
        score = partial(scored_set, model, stream, batch_size, max_examples, route, n_predictions, newest)
        mine = {k: score(task, i, contexts) for k, (i, task) in enumerate(sets) if k % world == rank}
    finally:
        model.train(was_training)
    if world > 1:
        mine = {k: v for part in gather(mine) for k, v in part.items()}
    scores = []
    for k, (_, task) in enumerate(sets):
        score, own_details, records = mine[k]
        scores.append(score)
        if details is not None and own_details:
            details[task.name] = details.get(task.name, {}) | own_details
        if predictions is not None and n_predictions and records is not None:
            predictions[task.name] = records
    return scores


def scored_set(
    model, stream, batch_size, max_examples, route, n_predictions, newest, task, index, contexts
) -> tuple[float, dict[str, float], list[dict[str, Any]] | None]:
    """One set's score, its details and its first answers (`evaluate_stream`); `index` None: a kept
    set, scored with the model as it is (no per-task route, no rewritten rows)."""
    details: dict[str, dict[str, float]] = {}
    if index is None:
        scored = evaluate_task(model, task, stream, batch_size, max_examples, details)
    else:
        with route(index):
            rows = rewritten_rows(task, max_examples, newest, partial(contexts, index))
            scored = evaluate_task(model, task, stream, batch_size, max_examples, details, rows)
        if restated := restated_answers(task, scored, newest):
            details[task.name] = details.get(task.name, {}) | restated
    records = None
    if n_predictions and scored.answers is not None:
        records = prediction_records(task, stream, scored, n_predictions)
    return scored.score, details.get(task.name, {}), records


def evaluate_task(
    model: torch.nn.Module,
    task: EncodedTask,
    stream: EncodedStream,
    batch_size: int,
    max_examples: int | None,
    details: dict[str, dict[str, float]] | None = None,
    rows: tuple[list[list[int]], list[list[int]]] | None = None,
) -> Scored:
    """One task's score (and its first answers), on its first `max_examples` eval examples, or on
    `rows` = (prompts, targets) written for this evaluation (`rewritten_rows`)."""
    scored = _score(model, task, stream, batch_size, max_examples, details, rows)
    return dataclasses.replace(scored, rows=rows)


def rewritten_rows(
    task: EncodedTask, max_examples: int | None, newest: int, rewrite: Callable[[list[str]], list[str] | None]
) -> tuple[list[list[int]], list[list[int]]] | None:
    """The (prompts, targets) of the task's first `max_examples` eval examples written again with the
    answers revised up to task `newest` and the prompts `rewrite(questions)` gives; None if neither
    changes a row (the encoded `task.eval` then stands). A generated task's only: labels, text and
    preference pairs are scored as encoded."""
    if task.writer is None or task.kind != "prompt_target" or task.metric == "accuracy":
        return None
    examples = task.examples[: max_examples or len(task.examples)]
    revised = {r.example: r.target for r in sorted(task.revisions, key=lambda r: r.task) if r.task <= newest}
    examples = [dataclasses.replace(ex, target=revised.get(i, ex.target)) for i, ex in enumerate(examples)]
    prompts = rewrite([ex.prompt for ex in examples])
    if prompts is None and not any(i < len(examples) for i in revised):
        return None
    if prompts is not None:
        assert len(prompts) == len(examples), "eval_context returns one prompt per question"
        examples = [dataclasses.replace(ex, prompt=p) for ex, p in zip(examples, prompts, strict=True)]
    written = task.writer.encode(examples, "eval")
    if not written.rows:
        raise UserError(f"task {task.name!r}: no rewritten eval prompt fits the limit of {task.writer.limit}")
    pairs = list(zip(written.rows, written.starts, strict=True))
    return [r[:s] for r, s in pairs], [r[s:] for r, s in pairs]


def restated_answers(task: EncodedTask, scored: Scored, newest: int) -> dict[str, float] | None:
    """Of the scored questions whose fact a task up to `newest` restated (`task.revisions`): how many
    (`restated`), the fraction answered with the newest value (`restated_newest`) and the fraction
    answered with a value it replaced and not the newest (`restated_old`). None if there are none."""
    if scored.answers is None or scored.correct is None:
        return None
    values: dict[int, list[str]] = {}  # example -> its values, oldest first
    for r in sorted(task.revisions, key=lambda r: r.task):
        if r.task <= newest and r.example < len(scored.answers):
            values.setdefault(r.example, [task.examples[r.example].target]).append(r.target)
    if not values:
        return None
    old = [
        not scored.correct[i] and any(words_within(normalise(v), scored.answers[i]) for v in vs[:-1])
        for i, vs in values.items()
    ]
    return {
        "restated": float(len(values)),
        "restated_newest": sum(scored.correct[i] for i in values) / len(values),
        "restated_old": sum(old) / len(values),
    }


def _score(model, task, stream, batch_size, max_examples, details, given) -> Scored:
    """`evaluate_task`'s score, on the rows `given` or on the encoded ones (of an edit task: the
    first `max_examples` of each part)."""
    n = len(task.eval) if max_examples is None else min(max_examples, len(task.eval))
    if task.kind == "edit":
        rows, answers = edit_answers(model, task, stream, batch_size, max_examples)
        scores, scored = edit_scores(task, stream, rows, answers)
        if details is not None:
            details[task.name] = scores
        return scored
    if task.metric == "preference_accuracy":
        scores = preference_scores(model, task, batch_size, n)
        if details is not None:
            details[task.name] = scores
        return Scored(scores[task.metric])
    prompts, targets = given if given is not None else (task.eval.prompts(n), task.eval.targets(n))
    n = len(prompts)
    if task.metric in TEXT_METRICS:
        scores, answers = text_scores(model, prompts, targets, stream, batch_size, task.metric)
        if details is not None and len(scores) > 1:
            details[task.name] = scores
        return Scored(scores[task.metric], answers)
    if task.metric in ("exact_match", "answer_contains"):
        contains = task.metric == "answer_contains"
        return answer_match(model, prompts, targets, stream, batch_size, contains)
    if task.metric == "exact_match_strict":
        return exact_match(model, prompts, targets, stream, batch_size)
    if task.metric == "accuracy":
        return choice_accuracy(model, prompts, targets, task.choices, stream, batch_size)
    if task.metric == "tool_success":
        scores, scored = tool_success(model, prompts, targets, stream, batch_size)
        if details is not None:
            details[task.name] = scores
        return scored
    rows = [p + t for p, t in zip(prompts, targets, strict=True)]
    logprob, count = sequence_logprobs(model, rows, [task.eval.prefix_len] * n, stream.pad_id, batch_size)
    return Scored(float(logprob.sum() / count.sum()))


def set_eval_references(
    model: torch.nn.Module, stream: EncodedStream, batch_size: int, max_examples: int | None
) -> None:
    """Fill every preference task's `eval.reference` with `model`'s log-probs (the initial model's),
    computed exactly as `preference_scores` computes the policy's, so the initial margins are 0; and
    every edit task's `base_answers` with `model`'s answers to its neighbour prompts, from the
    generations `edit_scores` makes, so the initial locality is 1."""
    for task in stream.tasks:
        if task.eval.pairs:
            task.eval.reference = reference_logprobs(model, task.eval, max(1, batch_size // 2), max_examples)
    for task in [*stream.tasks, *stream.kept]:
        if task.kind == "edit":
            rows, answers = edit_answers(model, task, stream, batch_size, max_examples)
            task.base_answers = [answers[i] for i in rows[-1]]


def preference_scores(model, task: EncodedTask, batch_size: int, n: int) -> dict[str, float]:
    """Preference accuracy and mean implicit reward margin of the first `n` held-out pairs, against
    the initial model's log-probs (`task.eval.reference`)."""
    reference = task.eval.reference
    assert reference is not None and len(reference) >= n, "the eval pairs' reference log-probs are not set"
    policy = reference_logprobs(model, task.eval, max(1, batch_size // 2), n)  # (n, 2)
    margins = reward_margins(policy, reference[:n], task.beta)  # (n,)
    return {
        "preference_accuracy": float((margins > 0).float().mean()),
        "reward_margin": float(margins.mean()),
    }


def normalise(text: str) -> str:
    """An answer as compared: whitespace collapsed to single spaces, case folded, trailing punctuation
    (TRAILING_PUNCTUATION) and spaces dropped. `" Paris. "` and `"paris"` are the same answer."""
    return " ".join(text.split()).casefold().rstrip(TRAILING_PUNCTUATION + " ")


def answer_text(ids: list[int], stream: EncodedStream) -> str:
    """What a generation answers: its tokens up to the stream's stop token (eos, or a chat template's
    end of turn), decoded, up to the first newline after its first words."""
    return stream.decode(until_eos(ids, stream.eos_id)).split("\n", 1)[0]


def answer_match(
    model, prompts, targets, stream: EncodedStream, batch_size: int, contains: bool = False
) -> Scored:
    """exact_match: the normalised answer text equals the normalised target text. `contains` (metric
    answer_contains): the target's words appear, in order and together, among the answer's words, so
    "The capital of Austria is Vienna." answers "Vienna" (for chat models that answer in sentences)."""
    longest = max(len(t) for t in targets)
    room = stream.context_length - max(len(p) for p in prompts)
    slack = SENTENCE_SLACK if contains else max(ANSWER_SLACK, longest // 2)
    budget = max(longest, min(longest + slack, room))  # never below strict's
    out = generate(
        model, prompts, budget, stream.pad_id, greedy=True, stop_id=stream.eos_id, batch_size=batch_size
    )
    answers = [answer_text(row, stream) for row in out.tolist()]
    wanted = [normalise(answer_text(t, stream)) for t in targets]
    if contains:
        hits = [words_within(w, a) for a, w in zip(answers, wanted, strict=True)]
    else:
        hits = [normalise(a) == w for a, w in zip(answers, wanted, strict=True)]
    return Scored(sum(hits) / len(hits), answers, hits)


def edit_rows(parts: tuple[int, ...], limit: int | None) -> list[list[int]]:
    """The eval rows of each part of an edit task (EDIT_PARTS order), the first `limit` of each."""
    out, start = [], 0
    for n in parts:
        out.append(list(range(start, start + (n if limit is None else min(n, limit)))))
        start += n
    return out


def answer_budget(prompt_len: int, target_len: int, context: int) -> int:
    """Tokens generated for one answer: a few past its target (as exact match's), inside the context."""
    return max(1, min(target_len + max(ANSWER_SLACK, target_len // 2), context - prompt_len))


def edit_answers(
    model, task: EncodedTask, stream: EncodedStream, batch_size: int, limit: int | None
) -> tuple[list[list[int]], dict[int, str]]:
    """An edit task's rows by part (`edit_rows`: the first `limit` of each) and the answer to each row,
    by row: every row generated greedily up to its own budget (`answer_budget`), so an answer does not
    depend on the rows it was batched with; the rows batched by budget (none runs longer than needed)."""
    rows = edit_rows(task.parts, limit)
    prompts, targets = task.eval.prompts(), task.eval.targets()
    context = stream.context_length
    budgets = {i: answer_budget(len(prompts[i]), len(targets[i]), context) for part in rows for i in part}
    order = sorted(budgets, key=lambda i: (budgets[i], len(prompts[i])))
    answers = {}
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        out = generate(
            model, [prompts[i] for i in chunk], budgets[chunk[-1]], stream.pad_id, stop_id=stream.eos_id
        ).tolist()  # (B, the chunk's largest budget), greedy
        answers |= {i: answer_text(row[: budgets[i]], stream) for i, row in zip(chunk, out, strict=True)}
    return rows, answers


def edit_scores(
    task: EncodedTask, stream: EncodedStream, rows: list[list[int]], answers: dict[int, str]
) -> tuple[dict[str, float], Scored]:
    """Reliability (the new target on the edit prompts), generality (on the paraphrases) and locality
    (the neighbours answered as the initial model answered them, `task.base_answers`), from the
    task's `answers` by row; and the edit prompts' answers."""
    assert task.base_answers is not None, "the edit task's base answers are not set"
    edits, paraphrases, neighbours = rows
    targets = task.eval.targets()
    new_target = {i: normalise(answers[i]) == normalise(answer_text(targets[i], stream)) for i in answers}
    base = task.base_answers[: len(neighbours)]
    kept = [normalise(answers[i]) == normalise(b) for i, b in zip(neighbours, base, strict=True)]
    scores = {
        "reliability": sum(new_target[i] for i in edits) / len(edits),
        "generality": sum(new_target[i] for i in paraphrases) / len(paraphrases),
        "locality": sum(kept) / len(kept),
    }
    return scores, Scored(scores["reliability"], [answers[i] for i in edits], [new_target[i] for i in edits])


def words_within(target: str, answer: str) -> bool:
    """Whether the words of `target` appear, in order and next to each other, among those of `answer`
    (case folded, punctuation ignored)."""
    want, got = WORD.findall(target.casefold()), WORD.findall(answer.casefold())
    return bool(want) and any(got[i : i + len(want)] == want for i in range(len(got) - len(want) + 1))


def exact_match(model, prompts, targets, stream: EncodedStream, batch_size: int) -> Scored:
    """exact_match_strict: the generated tokens equal the target's, its eos included."""
    longest = max(len(t) for t in targets)
    out = generate(
        model, prompts, longest, stream.pad_id, greedy=True, stop_id=stream.eos_id, batch_size=batch_size
    )
    rows = out.tolist()
    hits = [row[: len(t)] == t for row, t in zip(rows, targets, strict=True)]
    return Scored(sum(hits) / len(hits), [stream.decode(until_eos(r, stream.eos_id)) for r in rows], hits)


def text_scores(
    model, prompts, targets, stream: EncodedStream, batch_size: int, metric: str
) -> tuple[dict[str, float], list[str]]:
    """Greedy generations decoded and scored by `metric` (and ALSO_REPORTED[metric]), and the
    decoded generations."""
    budget = min(2 * max(len(t) for t in targets), stream.context_length - max(len(p) for p in prompts))
    if budget < 1:
        raise UserError("the prompts fill the model's context: no room left to generate an answer")
    out = generate(
        model, prompts, budget, stream.pad_id, greedy=True, stop_id=stream.eos_id, batch_size=batch_size
    )
    predictions = [stream.decode(until_eos(row, stream.eos_id)) for row in out.tolist()]
    references = [stream.decode(until_eos(t, stream.eos_id)) for t in targets]
    sources = [stream.decode(p[stream.prefix_len :]) for p in prompts]
    names = (metric, *ALSO_REPORTED.get(metric, ()))
    return {name: TEXT_METRICS[name](predictions, references, sources) for name in names}, predictions


def tool_success(
    model, prompts, targets, stream: EncodedStream, batch_size: int
) -> tuple[dict[str, float], Scored]:
    """tool_success and malformed_calls of the examples, and each one's transcript (its call, the
    result fed back, its answer) as the answer it gave."""
    assert stream.encode is not None, "a tool task's evaluation tokenizes the results"
    wanted = [split_target(stream.decode(until_eos(t, stream.eos_id)))[2] for t in targets]
    budget = max(len(t) for t in targets) + ANSWER_SLACK  # a call is shorter than its whole target
    first = generate_within(model, prompts, budget, stream, batch_size)
    calls = [call_tokens(row, stream) for row in first]  # (tokens up to `</call>`, the call) or None
    results = {i: execute(c[1]) for i, c in enumerate(calls) if c is not None}
    fed = {i: prompts[i] + calls[i][0] + stream.encode(result_segment(r)) for i, r in results.items()}
    answers = answers_after(model, fed, max(len(stream.encode(w)) for w in wanted), stream, batch_size)
    hits = [i in answers and normalise(answers[i]) == normalise(w) for i, w in enumerate(wanted)]
    transcripts = [
        f"{CALL_OPEN}{c[1]}{CALL_CLOSE} {RESULT_OPEN}{results[i].fed_back}{RESULT_CLOSE} {answers.get(i, '')}"
        if c is not None
        else stream.decode(until_eos(first[i], stream.eos_id))
        for i, c in enumerate(calls)
    ]
    malformed = sum(c is None or results[i].malformed for i, c in enumerate(calls))
    scores = {"tool_success": sum(hits) / len(hits), "malformed_calls": malformed / len(hits)}
    return scores, Scored(scores["tool_success"], transcripts, hits)


def generate_within(model, prompts, budget: int, stream: EncodedStream, batch_size: int) -> list[list[int]]:
    """Greedy continuations of `prompts`, up to `budget` tokens or the end of the model's context."""
    budget = min(budget, stream.context_length - max(len(p) for p in prompts))
    if budget < 1:
        raise UserError("the prompts fill the model's context: no room left to generate an answer")
    out = generate(
        model, prompts, budget, stream.pad_id, greedy=True, stop_id=stream.eos_id, batch_size=batch_size
    )
    return out.tolist()


def answers_after(
    model, fed: dict[int, list[int]], longest: int, stream: EncodedStream, batch_size: int
) -> dict[int, str]:
    """The answer text generated after each row of `fed` (example -> its prompt, call and result) that
    leaves room in the context for `longest` answer tokens and the slack; the others answer nothing."""
    budget = longest + ANSWER_SLACK
    fed = {i: row for i, row in fed.items() if len(row) + budget <= stream.context_length}
    if not fed:
        return {}
    rows = generate_within(model, list(fed.values()), budget, stream, batch_size)
    return {i: answer_text(row, stream) for i, row in zip(fed, rows, strict=True)}


def call_tokens(ids: list[int], stream: EncodedStream) -> tuple[list[int], str] | None:
    """A generation's tokens up to the one that closes its call, and the call (the text between the
    markers); None if the generation does not start with a call that it closes."""
    ids = until_eos(ids, stream.eos_id)
    call = find_call(stream.decode(ids))
    if call is None:
        return None
    end = next(k for k in range(1, len(ids) + 1) if CALL_CLOSE in stream.decode(ids[:k]))
    return ids[:end], call


def until_eos(ids: list[int], eos_id: int) -> list[int]:
    return ids[: ids.index(eos_id)] if eos_id in ids else ids


def prediction_records(
    task: EncodedTask, stream: EncodedStream, scored: Scored, n: int
) -> list[dict[str, Any]]:
    """The first `n` scored examples of `task` as {prompt, target, prediction[, correct]}."""
    assert scored.answers is not None
    n = min(n, len(scored.answers))
    encoded = (task.eval.prompts(n), task.eval.targets(n))
    prompts, targets = scored.rows if scored.rows is not None else encoded
    records = []
    for i in range(n):
        record = {
            "prompt": stream.decode(prompts[i][task.eval.prefix_len :]),
            "target": stream.decode(until_eos(targets[i], stream.eos_id)),
            "prediction": scored.answers[i],
        }
        records.append(record | ({"correct": scored.correct[i]} if scored.correct is not None else {}))
    return records


def choice_accuracy(
    model, prompts, targets, choices: list[list[int]], stream: EncodedStream, batch_size: int
) -> Scored:
    best = choice_logprobs(model, prompts, choices, stream.pad_id, batch_size).argmax(-1).tolist()  # (N,)
    hits = [choices[b] == t for b, t in zip(best, targets, strict=True)]
    labels = [stream.decode(until_eos(choices[b], stream.eos_id)) for b in best]
    return Scored(sum(hits) / len(hits), labels, hits)


def choice_logprobs(
    model, prompts: list[list[int]], choices: list[list[int]], pad_id: int, batch_size: int
) -> torch.Tensor:
    """log p(choice | prompt) summed over each choice's tokens, for every prompt and choice: (N, C).

    Each prompt is read once: one forward over the (left-padded) prompts fills a KV cache, which is
    repeated for the C labels, and one more forward over the labels scores them all, so a prompt's
    tokens are not recomputed per label. `batch_size` bounds the prompt x label rows of a forward."""
    device = next(model.parameters()).device
    n_choices = len(choices)
    per = max(1, batch_size // n_choices)  # prompts per forward
    labels, label_mask = (x.to(device) for x in pad_rows(choices, pad_id))  # (C, L) each
    out = []
    for i in range(0, len(prompts), per):
        ids, mask = (x.to(device) for x in pad_rows(prompts[i : i + per], pad_id, side="left"))  # (B, P)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, P)
        cache, key = DynamicCache(), cache_keyword(model)
        first = model(
            input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **{key: cache}
        )
        first_logp = torch.log_softmax(first.logits[:, -1].float(), -1)  # (B, V): each label's first token
        cache.batch_repeat_interleave(n_choices)
        rows = labels.repeat(len(ids), 1)  # (B*C, L): prompt b's labels in rows b*C .. b*C+C-1
        row_mask = label_mask.repeat(len(ids), 1)  # (B*C, L)
        label_pos = (
            positions[:, -1:].repeat_interleave(n_choices, 0) + 1 + torch.arange(rows.shape[1], device=device)
        )
        logits = model(
            input_ids=rows,
            attention_mask=torch.cat([mask.repeat_interleave(n_choices, 0), row_mask], 1),  # (B*C, P+L)
            position_ids=label_pos,  # (B*C, L)
            use_cache=True,
            **{key: cache},
        ).logits  # (B*C, L, V)
        logp = torch.log_softmax(logits[:, :-1].float(), -1)  # (B*C, L-1, V): predicts tokens 1..L-1
        later = logp.gather(2, rows[:, 1:, None]).squeeze(2) * row_mask[:, 1:]  # (B*C, L-1)
        head = first_logp.repeat_interleave(n_choices, 0).gather(1, rows[:, :1]).squeeze(1)  # (B*C,)
        out.append((head + later.sum(-1)).view(len(ids), n_choices).cpu())
    return torch.cat(out)


def sequence_logprobs(
    model, rows: list[list[int]], starts: list[int], pad_id: int, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of log p(token) over positions `start..end` of each row, and the count of those tokens."""
    device = next(model.parameters()).device
    sums, counts = [], []
    for i in range(0, len(rows), batch_size):
        chunk, chunk_starts = rows[i : i + batch_size], starts[i : i + batch_size]
        ids, attention = pad_rows(chunk, pad_id)  # (B, T) each
        pos = torch.arange(ids.shape[1]).unsqueeze(0)  # (1, T)
        scored = (pos >= torch.tensor(chunk_starts).unsqueeze(1)) & attention.bool()  # (B, T)
        ids, attention, scored = ids.to(device), attention.to(device), scored.to(device)
        logits = model(input_ids=ids, attention_mask=attention).logits  # (B, T, V)
        token_loss, mask = next_token_loss(logits, ids, scored)  # (B, T-1) each
        sums.append(-token_loss.sum(-1).cpu())
        counts.append(mask.sum(-1).cpu())
    return torch.cat(sums), torch.cat(counts)
