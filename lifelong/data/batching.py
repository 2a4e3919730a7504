"""Tokenized tasks and the batches cut from them.

Every sequence is `prefix + prompt + target + [stop]`. The prefix is what every row of a task starts
with and no loss trains: `[bos]` (if the tokenizer has one) and the task token, or in a chat-formatted
task the chat template's start (lifelong/data/render.py writes prompt-target rows: templates, chat,
length clipping). The stop token is eos, or the chat template's end of turn. Text tasks are cut into
windows of the row limit, each with the prefix. Rows are stored right-padded in one tensor per split
so that a batch is an index operation.

A tool example's row is `prefix + prompt + call + result + answer + [stop]`, its segments tokenized
apart (evaluation appends the result's tokens to the model's own call the same way); the result's
tokens are a hole in the loss mask: the executor writes them, the model never has to.

A preference example gives two rows sharing the prompt, `prefix + prompt + chosen + [stop]` and
`prefix + prompt + rejected + [stop]`, stored next to each other (rows 2i and 2i+1); a batch of B pairs
is 2B rows, the B chosen rows first, and its loss mask is on the answer tokens (the stop included).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch

from lifelong.data.render import Rows, RowWriter, common_prefix
from lifelong.data.task import DPO_BETA, Document, Example, Revision, Stream, Task
from lifelong.errors import UserError
from lifelong.seeding import derive_seed
from lifelong.tools.executor import split_target

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
    # Tool rows: [start, end) of each row's tool result, (N, 2) long, never in the loss; None: no holes.
    holes: torch.Tensor | None = None

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
        if self.holes is not None:
            hole = self.holes[rows]  # (B, 2)
            loss_mask &= (pos < hole[:, :1]) | (pos >= hole[:, 1:])
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
    holes = None
    if any(s.holes is not None for s in sets):  # rows without a hole get an empty one
        empty = [torch.zeros((s.ids.shape[0], 2), dtype=torch.long) for s in sets]
        holes = torch.cat([e if s.holes is None else s.holes for s, e in zip(sets, empty, strict=True)])
    return EncodedSet(
        torch.cat([pad_width(s.ids, width, pad_id) for s in sets]),
        torch.cat([s.lengths for s in sets]),
        torch.cat([s.target_start for s in sets]),
        sets[0].prefix_len,
        sets[0].pairs,
        holes=holes,
    )


@dataclass
class EncodedTask:
    name: str
    kind: str
    metric: str
    prefix: list[int]  # what every row starts with: [bos?, task token] or the chat template's start
    train: EncodedSet
    eval: EncodedSet
    choices: list[list[int]]  # token ids of each label (accuracy metric), the stop token included
    stop_id: int | None = None  # the token that ends every row (eos, or a chat template's end of turn)
    note: str = ""  # rows clipped or skipped to fit the limit, said once in the run's log
    beta: float = DPO_BETA  # preference tasks: DPO's beta
    parts: tuple[int, ...] = ()  # edit tasks: eval rows of each of EDIT_PARTS, in order (Task.parts)
    # Edit tasks: the initial model's answer to each neighbour prompt (the first `eval_examples`), what
    # locality compares with; set before any training (evaluate.set_eval_references), kept in checkpoints.
    base_answers: list[str] | None = None
    # What evaluation needs to write other eval rows than `eval`'s (a revised answer, a prompt that a
    # method's `eval_context` rewrote): the held-out examples as text and the writer of the task's rows.
    examples: list[Example] = field(default_factory=list)
    writer: RowWriter | None = None
    documents: list[Document] = field(default_factory=list)  # Task.documents, as text
    revisions: list[Revision] = field(default_factory=list)  # Task.revisions


@dataclass
class EncodedStream:
    name: str
    tasks: list[EncodedTask]
    pad_id: int
    eos_id: int
    max_len: int  # longest row of any split
    context_length: int  # the model's context (generation stops there)
    decode: Callable[[list[int]], str]  # token ids -> text, special tokens skipped
    notes: list[str] = field(default_factory=list)  # rows clipped or skipped, for the run's log
    # kept columns (evaluated, never trained; `Stream.kept`): not in `tasks`, nor in `max_len`
    kept: list[EncodedTask] = field(default_factory=list)
    # text -> token ids, no special tokens added (a tool task's evaluation tokenizes the results)
    encode: Callable[[str], list[int]] | None = None

    def __len__(self) -> int:
        return len(self.tasks)

    @property
    def prefix_len(self) -> int:
        return self.tasks[0].train.prefix_len


def encode_stream(stream: Stream, tokenizer, max_length: int) -> EncodedStream:
    """Every task of `stream` tokenized; rows end at one stop token (eos, or the chat end of turn) and
    every task's prefix has one length (the shortest: methods read `prefix_len` stream-wide)."""
    pad_id = tokenizer.pad_token_id
    tokens = [t.token for t in stream.tasks if t.format.task_token]
    if len(set(tokens)) != len(tokens):
        raise UserError("two tasks share a task token: each task needs its own")
    tasks = [encode_task(task, tokenizer, max_length) for task in stream.tasks]
    stops = {t.stop_id for t in tasks}
    if len(stops) > 1:
        raise UserError("the tasks of a stream must end their rows alike: all chat-formatted or none")
    n = min(len(t.prefix) for t in tasks)
    for t in tasks:
        t.prefix = t.prefix[:n]
        t.train.prefix_len = t.eval.prefix_len = n
    max_len = max(max(t.train.ids.shape[1], t.eval.ids.shape[1]) for t in tasks)
    notes = [t.note for t in tasks if t.note]
    kept = [encode_kept(task, tokenizer, max_length) for task in stream.kept]
    return EncodedStream(
        stream.name,
        tasks,
        pad_id,
        stops.pop(),
        max_len,
        max_length,
        decoder(tokenizer),
        notes,
        kept,
        encoder(tokenizer),
    )


def decoder(tokenizer) -> Callable[[list[int]], str]:
    def decode(ids: list[int]) -> str:
        return tokenizer.decode(ids, skip_special_tokens=True).strip()

    return decode


def encoder(tokenizer) -> Callable[[str], list[int]]:
    def encode(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    return encode


def row_limit(task: Task, max_length: int) -> int:
    """A task's row length limit: its `max_tokens`, never more than the model's context."""
    return min(task.format.max_tokens or max_length, max_length)


def encode_task(task: Task, tokenizer, max_length: int) -> EncodedTask:
    for split in ("train", "eval"):
        if not getattr(task, split):
            raise UserError(f"task {task.name!r} has no {split} examples")
    assert task.kind != "edit" or sum(task.parts) == len(task.eval), "an edit task's parts cover its eval"
    limit = row_limit(task, max_length)
    writer = RowWriter(task, tokenizer, limit)
    if task.kind == "text":
        rows = {s: _text_rows(task, s, tokenizer, writer.lead, limit) for s in ("train", "eval")}
    elif task.kind == "preference":
        rows = {s: _preference_rows(writer, getattr(task, s), s) for s in ("train", "eval")}
    elif task.kind == "tool":
        rows = {s: _tool_rows(writer, getattr(task, s), s) for s in ("train", "eval")}
    else:
        rows = {s: writer.encode(getattr(task, s), s) for s in ("train", "eval")}
    for split, r in rows.items():
        if not r.rows:
            raise UserError(f"task {task.name!r}: no {split} example fits the limit of {limit} tokens")
    if task.kind == "edit" and rows["eval"].skipped:  # the parts would no longer line up
        raise UserError(
            f"task {task.name!r}: an edit task's held-out rows cannot be skipped (overlong: skip); "
            "use overlong: clip or a larger max_tokens"
        )
    every = [*rows["train"].rows, *rows["eval"].rows]
    prefix = common_prefix(every, min([*rows["train"].fixed, *rows["eval"].fixed]))
    train, eval_ = (_pack(rows[s], len(prefix), tokenizer.pad_token_id) for s in rows)
    train.pairs = eval_.pairs = task.kind == "preference"
    choices: list[list[int]] = []
    if task.metric == "accuracy":
        choices = [writer.render(Example("", c), "")[2] for c in task.choices()]
        choices = [ids + [writer.stop_id] for ids in writer.ids(choices)]
    return EncodedTask(
        task.name,
        task.kind,
        task.metric,
        prefix,
        train,
        eval_,
        choices,
        writer.stop_id,
        _note(task, rows, limit, writer.note),
        task.beta,
        task.parts,
        examples=list(task.eval),
        writer=writer,
        documents=list(task.documents),
        revisions=list(task.revisions),
    )


def _note(task: Task, rows: dict[str, Rows], limit: int, instruction: str) -> str:
    """What was done to fit the row limit, in one line ("" if nothing was)."""
    done = [f"{r.clipped} {split} rows clipped" for split, r in rows.items() if r.clipped]
    done += [f"{r.skipped} {split} rows skipped" for split, r in rows.items() if r.skipped]
    parts = [instruction] if instruction else []
    if done:
        parts.append(
            f"{', '.join(done)} to fit the limit of {limit} tokens (overlong: {task.format.overlong})"
        )
    return f"task {task.name!r}: {'; '.join(parts)}" if parts else ""


def encode_kept(task: Task, tokenizer, max_length: int) -> EncodedTask:
    """A kept set: its held-out split only, in its row format without the task token (which the model
    would never train), and an empty training split."""
    if not task.eval:
        raise UserError(f"kept set {task.name!r} has no examples")
    untokened = dataclasses.replace(task.format, task_token=False)
    encoded = encode_task(dataclasses.replace(task, train=task.eval, format=untokened), tokenizer, max_length)
    encoded.train = _pack(Rows(), encoded.eval.prefix_len, tokenizer.pad_token_id)
    return encoded


def _preference_rows(writer: RowWriter, examples: list[Example], split: str) -> Rows:
    """Two rows per example, chosen then rejected, sharing the prompt; the loss reads the answers. A
    pair is clipped like any row, never skipped alone (that would pair rows of different examples)."""
    chosen = writer.encode([dataclasses.replace(ex, rejected="") for ex in examples], f"{split} chosen")
    rejected = writer.encode(
        [dataclasses.replace(ex, target=ex.rejected, rejected="") for ex in examples], f"{split} rejected"
    )
    if chosen.skipped or rejected.skipped:
        raise UserError(
            f"task {writer.task.name!r}: a {split} preference pair does not fit the limit of {writer.limit} "
            "tokens even clipped, and a pair cannot be skipped (use a larger max_tokens)"
        )
    out = Rows(clipped=chosen.clipped + rejected.clipped)
    for i in range(len(chosen.rows)):
        for rows in (chosen, rejected):
            out.rows.append(rows.rows[i])
            out.starts.append(rows.starts[i])
            out.fixed.append(rows.fixed[i])
    return out


def _text_rows(task: Task, split: str, tokenizer, prefix: list[int], limit: int) -> Rows:
    window = limit - len(prefix)
    if window < 2:
        raise UserError(f"the model's context of {limit} tokens is too short for task {task.name!r}")
    out = Rows()
    for doc in tokenizer([ex.prompt for ex in getattr(task, split)], add_special_tokens=False)["input_ids"]:
        doc = doc + [tokenizer.eos_token_id]
        out.rows += [prefix + doc[i : i + window] for i in range(0, len(doc), window)]
    out.starts, out.fixed = [len(prefix)] * len(out.rows), [len(prefix)] * len(out.rows)
    return out


def _tool_rows(writer: RowWriter, examples: list[Example], split: str) -> Rows:
    """Tool rows: the prompt, call, result and answer tokenized apart, the result a hole. A row over
    the limit is skipped (or, with overlong: error, refused): a clipped question would not match its
    call."""
    rendered = [writer.render(ex, ex.prompt) for ex in examples]
    parts = []
    for i, (_, prompt, target) in enumerate(rendered):
        try:
            parts += [prompt, *split_target(target)]
        except ValueError as err:
            raise UserError(f"task {writer.task.name!r} {split} example {i}: {err}") from None
    ids = writer.ids(parts)
    out = Rows()
    for i, (lead, _, _) in enumerate(rendered):
        prompt, call, result, answer = ids[4 * i : 4 * i + 4]
        row = [*lead, *prompt, *call, *result, *answer, writer.stop_id]
        if len(row) > writer.limit:
            if writer.fmt.overlong == "error":
                raise UserError(
                    f"task {writer.task.name!r}: {split} example {i} is {len(row)} tokens long, longer "
                    f"than the limit of {writer.limit} tokens (a tool row cannot be clipped)"
                )
            out.skipped += 1
            continue
        start = len(lead) + len(prompt)
        out.rows.append(row)
        out.starts.append(start)
        out.fixed.append(len(lead))
        out.holes.append((start + len(call), start + len(call) + len(result)))
    return out


def _pack(rows: Rows, prefix_len: int, pad_id: int) -> EncodedSet:
    ids, _ = pad_rows(rows.rows, pad_id)
    lengths = torch.tensor([len(r) for r in rows.rows], dtype=torch.long)
    holes = torch.tensor(rows.holes, dtype=torch.long).view(-1, 2) if rows.holes else None  # (N, 2)
    return EncodedSet(ids, lengths, torch.tensor(rows.starts, dtype=torch.long), prefix_len, holes=holes)


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
