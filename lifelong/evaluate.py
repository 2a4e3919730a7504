"""Deterministic, batched evaluation of every task of a stream: one row of the accuracy matrix.

Scores are "higher is better" everywhere:
- exact_match: greedy generation (KV cache) of the target, compared token for token, eos included;
- accuracy: the label with the highest log-likelihood among the task's labels;
- loss: minus the mean next-token loss (nats per token) on the held-out text;
- chrf, bleu, entity_f1: greedy generation (KV cache, up to twice the longest target), decoded and
  scored against the decoded targets (lifelong/scoring.py); a chrF task also reports BLEU;
- preference_accuracy: the fraction of held-out pairs whose implicit reward margin
  beta * ((pi_c - ref_c) - (pi_r - ref_r)) is > 0 (lifelong/preference.py), next to the mean margin
  (`reward_margin`). The reference is fixed: the initial model, before any training of the stream
  (its log-probs are computed once, `EncodedSet.reference`), so every row of the matrix is measured
  against the same baseline and a fall down a column is forgetting, not a moved reference. The initial
  model itself scores 0 (every margin is 0).
Fixed examples, no sampling, `no_grad`, and the model's train/eval mode is restored afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch

from lifelong.data.batching import EncodedStream, EncodedTask, pad_rows
from lifelong.errors import UserError
from lifelong.losses import next_token_loss
from lifelong.preference import reference_logprobs, reward_margins
from lifelong.sampling import generate
from lifelong.scoring import TEXT_METRICS

# Scores computed from the same generations as a task's metric and reported next to it.
ALSO_REPORTED = {"chrf": ("bleu",), "preference_accuracy": ("reward_margin",)}


def no_route(task_index: int) -> AbstractContextManager[None]:
    return nullcontext()


@torch.no_grad()
def evaluate_stream(
    model: torch.nn.Module,
    stream: EncodedStream,
    batch_size: int = 512,
    max_examples: int | None = None,
    route: Callable[[int], AbstractContextManager[None]] = no_route,
    details: dict[str, dict[str, float]] | None = None,
) -> list[float]:
    """The score of every task of the stream, in stream order. Task i is scored inside `route(i)`:
    the methods' choice of weights for task i (e.g. its own adapter), restored afterwards. Scores
    reported next to a task's own (ALSO_REPORTED) go to `details[task name]`."""
    was_training = model.training
    model.eval()
    scores = []
    try:
        for i, task in enumerate(stream.tasks):
            with route(i):
                scores.append(evaluate_task(model, task, stream, batch_size, max_examples, details))
        return scores
    finally:
        model.train(was_training)


def evaluate_task(
    model: torch.nn.Module,
    task: EncodedTask,
    stream: EncodedStream,
    batch_size: int,
    max_examples: int | None,
    details: dict[str, dict[str, float]] | None = None,
) -> float:
    n = len(task.eval) if max_examples is None else min(max_examples, len(task.eval))
    if task.metric == "preference_accuracy":
        scores = preference_scores(model, task, batch_size, n)
        if details is not None:
            details[task.name] = scores
        return scores[task.metric]
    prompts, targets = task.eval.prompts(n), task.eval.targets(n)
    if task.metric in TEXT_METRICS:
        scores = text_scores(model, prompts, targets, stream, batch_size, task.metric)
        if details is not None and len(scores) > 1:
            details[task.name] = scores
        return scores[task.metric]
    if task.metric == "exact_match":
        return exact_match(model, prompts, targets, stream.pad_id, stream.eos_id, batch_size)
    if task.metric == "accuracy":
        return choice_accuracy(model, prompts, targets, task.choices, stream.pad_id, batch_size)
    rows = [p + t for p, t in zip(prompts, targets, strict=True)]
    logprob, count = sequence_logprobs(model, rows, [task.eval.prefix_len] * n, stream.pad_id, batch_size)
    return float(logprob.sum() / count.sum())


def set_eval_references(
    model: torch.nn.Module, stream: EncodedStream, batch_size: int, max_examples: int | None
) -> None:
    """Fill every preference task's `eval.reference` with `model`'s log-probs (the initial model's),
    computed exactly as `preference_scores` computes the policy's, so the initial margins are 0."""
    for task in stream.tasks:
        if task.eval.pairs:
            task.eval.reference = reference_logprobs(model, task.eval, max(1, batch_size // 2), max_examples)


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


def exact_match(model, prompts, targets, pad_id: int, eos_id: int, batch_size: int) -> float:
    longest = max(len(t) for t in targets)
    out = generate(model, prompts, longest, pad_id, greedy=True, stop_id=eos_id, batch_size=batch_size)
    hits = [out[i, : len(t)].tolist() == t for i, t in enumerate(targets)]
    return sum(hits) / len(hits)


def text_scores(
    model, prompts, targets, stream: EncodedStream, batch_size: int, metric: str
) -> dict[str, float]:
    """Greedy generations decoded and scored by `metric` (and ALSO_REPORTED[metric])."""
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
    return {name: TEXT_METRICS[name](predictions, references, sources) for name in names}


def until_eos(ids: list[int], eos_id: int) -> list[int]:
    return ids[: ids.index(eos_id)] if eos_id in ids else ids


def choice_accuracy(model, prompts, targets, choices: list[list[int]], pad_id: int, batch_size: int) -> float:
    rows = [p + c for p in prompts for c in choices]
    starts = [len(p) for p in prompts for _ in choices]
    logprob, _ = sequence_logprobs(model, rows, starts, pad_id, batch_size)
    best = logprob.view(len(prompts), len(choices)).argmax(-1)  # (N,)
    hits = [choices[int(b)] == t for b, t in zip(best, targets, strict=True)]
    return sum(hits) / len(hits)


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
