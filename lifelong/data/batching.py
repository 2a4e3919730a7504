"""Tokenized tasks and the batches cut from them.

Every sequence is `prefix + prompt + target + [eos]`, where the prefix is `[bos]` (if the tokenizer
has one) followed by the task token. Text tasks are cut into context-sized windows, each with the
prefix. Rows are stored right-padded in one tensor per split so that a batch is an index operation.

A preference example gives two rows sharing the prompt, `prefix + prompt + chosen + [eos]` and
`prefix + prompt + rejected + [eos]`, stored next to each other (rows 2i and 2i+1); a batch of B pairs
is 2B rows, the B chosen rows first, and its loss mask is on the answer tokens (eos included).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from lifelong.data.task import DPO_BETA, Stream, Task
from lifelong.errors import UserError
from lifelong.seeding import derive_seed

LossOn = Literal["sequence", "target"]


@dataclass
class Batch:
    """Right-padded rows. `loss_mask[b, t]` is 1 where token t is predicted by the loss."""

    input_ids: torch.Tensor  # (B, T) long
    attention_mask: torch.Tensor  # (B, T) long
    loss_mask: torch.Tensor  # (B, T) bool

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def to(self, device: torch.device) -> Batch:
        return Batch(*(x.to(device, non_blocking=True) for x in self.tensors()))

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.input_ids, self.attention_mask, self.loss_mask

    def select(self, rows: slice | torch.Tensor) -> Batch:
        return Batch(*(x[rows] for x in self.tensors()))

    def trimmed(self) -> Batch:
        """The same rows without the trailing columns that no row attends to."""
        used = self.attention_mask.any(0).nonzero()
        width = int(used.max()) + 1 if len(used) else 1
        return Batch(*(x[:, :width] for x in self.tensors()))


def pad_rows(
    rows: Sequence[torch.Tensor | Sequence[int]],
    pad_id: int,
    side: Literal["left", "right"] = "right",
    width: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of token ids (lists or 1-D tensors) as one (N, W) long tensor padded with `pad_id` on `side`,
    and its (N, W) long attention mask (1 on real tokens). W is the longest row unless `width` is given."""
    lengths = [len(r) for r in rows]
    width = max(lengths, default=0) if width is None else width
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (row, n) in enumerate(zip(rows, lengths, strict=True)):
        cols = slice(width - n, width) if side == "left" else slice(0, n)
        ids[i, cols] = torch.as_tensor(row, dtype=torch.long)
        attention[i, cols] = 1
    return ids, attention


def pad_width(x: torch.Tensor, width: int, value: int) -> torch.Tensor:
    """A (N, W) tensor right-padded with `value` to (N, width): for stacking blocks of padded rows."""
    return torch.nn.functional.pad(x, (0, width - x.shape[1]), value=value)


def forward_groups(batches: list[Batch], max_waste: float = 0.1) -> list[list[int]]:
    """Which batches share a forward pass: all of them, unless right-padding them to one width would
    add more than `max_waste` of their own tokens, in which case each gets its own pass."""
    widths = [b.input_ids.shape[1] for b in batches]
    own = sum(w * len(b) for w, b in zip(widths, batches, strict=True))
    if max(widths) * sum(len(b) for b in batches) <= own * (1 + max_waste):
        return [list(range(len(batches)))]
    return [[i] for i in range(len(batches))]


def concat(batches: list[Batch], pad_id: int) -> Batch:
    """Stack batches row-wise, right-padding to the longest."""
    width = max(b.input_ids.shape[1] for b in batches)
    return Batch(
        torch.cat([pad_width(b.input_ids, width, pad_id) for b in batches]),
        torch.cat([pad_width(b.attention_mask, width, 0) for b in batches]),
        torch.cat([pad_width(b.loss_mask, width, 0) for b in batches]),
    )


@dataclass
class EncodedSet:
    """One split of one task, tokenized: row i is `ids[i, :lengths[i]]`. With `pairs`, rows 2i and
    2i+1 are example i's chosen and rejected rows, and the set's length, its batches' indices and
    `prompts`/`targets` count examples (pairs), not rows."""

    ids: torch.Tensor  # (N, L) long, right-padded with pad_id
    lengths: torch.Tensor  # (N,) long
    target_start: torch.Tensor  # (N,) long: index of the first target token (prefix end for text)
    prefix_len: int
    pairs: bool = False
    # With `pairs`: each pair's summed answer log-probs (chosen, rejected) under the DPO reference,
    # (N/2, 2) float; the trainer fills it (train: the model at the task's start; eval: the initial model).
    reference: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.ids.shape[0] // 2 if self.pairs else self.ids.shape[0]

    def pair_rows(self, units: torch.Tensor) -> torch.Tensor:
        """The rows of examples `units`: all their chosen rows, then all their rejected rows, (2B,)."""
        return torch.cat([2 * units, 2 * units + 1]) if self.pairs else units

    def batch(self, rows: torch.Tensor, loss_on: LossOn = "sequence") -> Batch:
        if self.pairs:  # rows are examples: (B,) -> (2B,) rows, scored on the answers
            rows, loss_on = self.pair_rows(rows), "target"
        lengths = self.lengths[rows]
        width = int(lengths.max())
        ids = self.ids[rows, :width]
        pos = torch.arange(width).unsqueeze(0)  # (1, T)
        attention = pos < lengths.unsqueeze(1)  # (B, T)
        start = self.target_start[rows] if loss_on == "target" else torch.full_like(lengths, self.prefix_len)
        loss_mask = attention & (pos >= start.unsqueeze(1))
        return Batch(ids, attention.long(), loss_mask)

    def _first(self, limit: int | None) -> list[int]:
        """The rows of the first `limit` examples (all if None): with `pairs`, their chosen rows."""
        n = len(self) if limit is None else min(limit, len(self))
        return [2 * i for i in range(n)] if self.pairs else list(range(n))

    def prompts(self, limit: int | None = None) -> list[list[int]]:
        """Prompt tokens (prefix included) of the first `limit` examples (all if None)."""
        return [self.ids[i, : self.target_start[i]].tolist() for i in self._first(limit)]

    def targets(self, limit: int | None = None) -> list[list[int]]:
        """Target tokens including the final eos (the chosen answer of a pair), of the first `limit`
        examples (all if None)."""
        return [self.ids[i, self.target_start[i] : self.lengths[i]].tolist() for i in self._first(limit)]

    def rows(self, rows: list[int]) -> list[list[int]]:
        """Rows `rows` (row indices, not examples) as lists of token ids."""
        return [self.ids[i, : self.lengths[i]].tolist() for i in rows]

    def chosen(self) -> EncodedSet:
        """A paired set's chosen rows as a plain set (what NTP on chosen answers trains on)."""
        if not self.pairs:
            return self
        keep = torch.arange(0, self.ids.shape[0], 2)
        return EncodedSet(self.ids[keep], self.lengths[keep], self.target_start[keep], self.prefix_len)


def cat_sets(sets: list[EncodedSet], pad_id: int) -> EncodedSet:
    if len({s.pairs for s in sets}) > 1:
        raise UserError("preference tasks cannot be trained together with tasks of another kind")
    width = max(s.ids.shape[1] for s in sets)
    return EncodedSet(
        torch.cat([pad_width(s.ids, width, pad_id) for s in sets]),
        torch.cat([s.lengths for s in sets]),
        torch.cat([s.target_start for s in sets]),
        sets[0].prefix_len,
        sets[0].pairs,
    )


@dataclass
class EncodedTask:
    name: str
    kind: str
    metric: str
    prefix: list[int]  # [bos?, task token]
    train: EncodedSet
    eval: EncodedSet
    choices: list[list[int]]  # token ids of each label (accuracy metric), eos included
    beta: float = DPO_BETA  # preference tasks: DPO's beta


@dataclass
class EncodedStream:
    name: str
    tasks: list[EncodedTask]
    pad_id: int
    eos_id: int
    max_len: int  # longest row of any split
    context_length: int  # the model's context (generation stops there)
    decode: Callable[[list[int]], str]  # token ids -> text, special tokens skipped

    def __len__(self) -> int:
        return len(self.tasks)

    @property
    def prefix_len(self) -> int:
        return self.tasks[0].train.prefix_len


def encode_stream(stream: Stream, tokenizer, max_length: int) -> EncodedStream:
    pad_id, eos_id = tokenizer.pad_token_id, tokenizer.eos_token_id
    tokens = [t.token for t in stream.tasks]
    if len(set(tokens)) != len(tokens):
        raise UserError("two tasks share a task token: each task needs its own")
    tasks = [encode_task(task, tokenizer, max_length) for task in stream.tasks]
    max_len = max(max(t.train.ids.shape[1], t.eval.ids.shape[1]) for t in tasks)
    return EncodedStream(stream.name, tasks, pad_id, eos_id, max_len, max_length, decoder(tokenizer))


def decoder(tokenizer) -> Callable[[list[int]], str]:
    def decode(ids: list[int]) -> str:
        return tokenizer.decode(ids, skip_special_tokens=True).strip()

    return decode


def task_prefix(tokenizer, token: str) -> list[int]:
    token_id = tokenizer.convert_tokens_to_ids(token)
    if token_id is None or token_id == tokenizer.unk_token_id:
        raise UserError(f"task token {token!r} is not in the tokenizer's vocabulary")
    bos = tokenizer.bos_token_id
    return ([bos] if bos is not None else []) + [token_id]


def encode_task(task: Task, tokenizer, max_length: int) -> EncodedTask:
    for split in ("train", "eval"):
        if not getattr(task, split):
            raise UserError(f"task {task.name!r} has no {split} examples")
    prefix = task_prefix(tokenizer, task.token)
    encode = {"text": _encode_text, "preference": _encode_preference}.get(task.kind, _encode_prompt_target)
    train, eval_ = (encode(task, split, tokenizer, prefix, max_length) for split in ("train", "eval"))
    choices: list[list[int]] = []
    if task.metric == "accuracy":
        choices = [_tokens(tokenizer, [c])[0] + [tokenizer.eos_token_id] for c in task.choices()]
    return EncodedTask(task.name, task.kind, task.metric, prefix, train, eval_, choices, task.beta)


def _tokens(tokenizer, texts: list[str]) -> list[list[int]]:
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def _encode_prompt_target(task: Task, split: str, tokenizer, prefix: list[int], max_length: int):
    examples = getattr(task, split)
    prompts = _tokens(tokenizer, [ex.prompt for ex in examples])
    targets = _tokens(tokenizer, [ex.target for ex in examples])
    rows, starts = [], []
    for i, (p, t) in enumerate(zip(prompts, targets, strict=True)):
        row = prefix + p + t + [tokenizer.eos_token_id]
        if len(row) > max_length:
            raise UserError(
                f"task {task.name!r}: {split} example {i} is {len(row)} tokens long, "
                f"longer than the model's context of {max_length} tokens"
            )
        rows.append(row)
        starts.append(len(prefix) + len(p))
    return _pack(rows, starts, len(prefix), tokenizer.pad_token_id)


def _encode_preference(task: Task, split: str, tokenizer, prefix: list[int], max_length: int):
    """Two rows per example, chosen then rejected, sharing the prompt; the loss reads the answers."""
    examples = getattr(task, split)
    prompts = _tokens(tokenizer, [ex.prompt for ex in examples])
    answers = _tokens(tokenizer, [a for ex in examples for a in (ex.target, ex.rejected)])
    rows, starts = [], []
    for i, p in enumerate(prompts):
        for answer in answers[2 * i : 2 * i + 2]:
            row = prefix + p + answer + [tokenizer.eos_token_id]
            if len(row) > max_length:
                raise UserError(
                    f"task {task.name!r}: {split} example {i} is {len(row)} tokens long, "
                    f"longer than the model's context of {max_length} tokens"
                )
            rows.append(row)
            starts.append(len(prefix) + len(p))
    encoded = _pack(rows, starts, len(prefix), tokenizer.pad_token_id)
    encoded.pairs = True
    return encoded


def _encode_text(task: Task, split: str, tokenizer, prefix: list[int], max_length: int):
    window = max_length - len(prefix)
    if window < 2:
        raise UserError(f"the model's context of {max_length} tokens is too short for task {task.name!r}")
    rows = []
    for doc in _tokens(tokenizer, [ex.prompt for ex in getattr(task, split)]):
        doc = doc + [tokenizer.eos_token_id]
        rows += [prefix + doc[i : i + window] for i in range(0, len(doc), window)]
    return _pack(rows, [len(prefix)] * len(rows), len(prefix), tokenizer.pad_token_id)


def _pack(rows: list[list[int]], starts: list[int], prefix_len: int, pad_id: int) -> EncodedSet:
    ids, _ = pad_rows(rows, pad_id)
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    return EncodedSet(ids, lengths, torch.tensor(starts, dtype=torch.long), prefix_len)


class BatchSchedule:
    """Which rows form batch `step` of a task: epochs of a seeded permutation, a pure function of
    (seed, task, step), so a resumed run draws exactly the batches the uninterrupted run would."""

    def __init__(self, n_rows: int, batch_size: int, seed: int, task_index: int):
        self.n, self.batch_size, self.seed, self.task_index = n_rows, batch_size, seed, task_index
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            gen = torch.Generator().manual_seed(derive_seed(self.seed, "batches", self.task_index, epoch))
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=gen)
        return self._perm

    def rows(self, step: int) -> torch.Tensor:
        out, pos, end = [], step * self.batch_size, (step + 1) * self.batch_size
        while pos < end:
            epoch, offset = divmod(pos, self.n)
            take = min(end - pos, self.n - offset)
            out.append(self._permutation(epoch)[offset : offset + take])
            pos += take
        return torch.cat(out)
