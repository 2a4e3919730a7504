"""Experience replay: a buffer of real examples from earlier tasks (an equal share per task by default),
mixed into every step. Preference tasks' pairs are kept in a buffer of their own with their reference
log-probs and replayed with the DPO loss they were trained with (docs/methods.md says why).

Also home to the pieces self-replay shares: the buffer, the frozen teacher and the replay
losses (`ntp`: next-token loss on the replay rows; `kl`: KL(teacher || model) over their positions).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from lifelong.data.batching import Batch, EncodedSet, concat, pad_rows
from lifelong.errors import UserError
from lifelong.methods.base import (
    Forward,
    Method,
    MethodConfig,
    Route,
    no_route,
    per_task_rows,
    register,
)
from lifelong.preference import dpo_loss, pair_logprobs
from lifelong.seeding import generator

# `MethodContext.for_rank`: the generator a process draws from, given the one every process shares.
ForRank = Callable[[torch.Generator], torch.Generator]


def same_generator(gen: torch.Generator) -> torch.Generator:
    return gen


class ReplayBuffer:
    """At most `capacity` real rows of earlier tasks, kept one of two ways.

    `balanced` (the default): the capacity is split between the tasks seen so far, as evenly as it
    divides (the earlier tasks keep the odd slots), each share a uniform sample of its task's rows. A
    task with 100 rows keeps as many slots as one with 10,000; with more tasks than slots the newest
    tasks get none. Otherwise a reservoir over every row offered: tasks kept in proportion to size.
    """

    def __init__(self, capacity: int, gen: torch.Generator, balanced: bool = True):
        self.capacity, self.gen, self.balanced, self.seen = capacity, gen, balanced, 0
        self.rows: list[torch.Tensor] = []  # 1-D token ids
        self.starts: list[int] = []  # target start of each row
        self.holes: list[tuple[int, int]] = []  # a tool row's result, not trained ((0, 0): none)
        self.tasks: list[int] = []  # the task each row came from
        self._packed: EncodedSet | None = None  # rows as one tensor, rebuilt after `add`

    def __len__(self) -> int:
        return len(self.rows)

    def add(self, data: EncodedSet, task: int) -> None:
        """Offer the rows of task `task` (tasks are offered in stream order, each once); of a preference
        task, its chosen rows (next-token loss on the chosen answers)."""
        self._packed, data = None, data.chosen()
        if self.balanced:
            self._add_balanced(data, task)
            return
        for i in range(len(data)):
            self.seen += 1
            if len(self.rows) < self.capacity:
                self._append(data, i, task)
                continue
            slot = int(torch.randint(self.seen, (1,), generator=self.gen))
            if slot < self.capacity:
                self.rows[slot], self.starts[slot] = (
                    data.ids[i, : data.lengths[i]].clone(),
                    int(data.target_start[i]),
                )
                self.holes[slot], self.tasks[slot] = row_hole(data, i), task

    def _add_balanced(self, data: EncodedSet, task: int) -> None:
        quota = balanced_quotas(self.capacity, task + 1)  # a task's quota never grows as tasks arrive
        keep: list[int] = []
        for t in range(task):  # shrink every earlier share to its new quota, uniformly
            rows = [i for i, owner in enumerate(self.tasks) if owner == t]
            picks = torch.randperm(len(rows), generator=self.gen)[: quota[t]].sort().values
            keep += [rows[int(j)] for j in picks]
        self.rows = [self.rows[i] for i in keep]
        self.starts = [self.starts[i] for i in keep]
        self.holes = [self.holes[i] for i in keep]
        self.tasks = [self.tasks[i] for i in keep]
        for i in torch.randperm(len(data), generator=self.gen)[: quota[task]].sort().values.tolist():
            self._append(data, i, task)
        self.seen += len(data)

    def _append(self, data: EncodedSet, i: int, task: int) -> None:
        self.rows.append(data.ids[i, : data.lengths[i]].clone())
        self.starts.append(int(data.target_start[i]))
        self.holes.append(row_hole(data, i))
        self.tasks.append(task)

    def sample(
        self, n: int, prefix_len: int, pad_id: int, loss_on: str, for_rank: ForRank = same_generator
    ) -> tuple[Batch, list[int]]:
        """`n` rows drawn uniformly (from `for_rank(gen)`: this process's draws), and their tasks."""
        picks = torch.randint(len(self.rows), (n,), generator=for_rank(self.gen))
        if self._packed is None:
            self._packed = self.as_set(prefix_len, pad_id)
        return self._packed.batch(picks, loss_on), [self.tasks[i] for i in picks.tolist()]

    def as_set(self, prefix_len: int, pad_id: int) -> EncodedSet:
        ids, _ = pad_rows(self.rows, pad_id)  # (N, W)
        lengths = torch.tensor([len(r) for r in self.rows], dtype=torch.long)
        starts = torch.tensor(self.starts, dtype=torch.long)
        holes = torch.tensor(self.holes, dtype=torch.long).view(-1, 2)  # (N, 2)
        return EncodedSet(ids, lengths, starts, prefix_len, holes=holes)

    def state_dict(self, prefix: str) -> dict[str, Any]:
        state: dict[str, Any] = {f"{prefix}seen": self.seen, f"{prefix}gen": self.gen.get_state()}
        if self.rows:
            packed = self.as_set(0, 0)
            state |= {
                f"{prefix}ids": packed.ids,
                f"{prefix}lengths": packed.lengths,
                f"{prefix}starts": packed.target_start,
                f"{prefix}holes": packed.holes,
                f"{prefix}tasks": torch.tensor(self.tasks, dtype=torch.long),
            }
        return state

    def load_state_dict(self, state: dict[str, Any], prefix: str) -> None:
        self.seen = int(state[f"{prefix}seen"])
        self.gen.set_state(state[f"{prefix}gen"])
        self.rows, self.starts, self.holes, self.tasks, self._packed = [], [], [], [], None
        if f"{prefix}ids" in state:
            ids, lengths = state[f"{prefix}ids"], state[f"{prefix}lengths"]
            self.rows = [ids[i, : lengths[i]].clone() for i in range(len(lengths))]
            self.starts = [int(s) for s in state[f"{prefix}starts"]]
            holes = state.get(
                f"{prefix}holes", torch.zeros((len(lengths), 2), dtype=torch.long)
            )  # older runs
            self.holes = [(int(a), int(b)) for a, b in holes.tolist()]
            self.tasks = [int(t) for t in state[f"{prefix}tasks"]]


def row_hole(data: EncodedSet, i: int) -> tuple[int, int]:
    """Row `i`'s hole in the loss (a tool row's result), (0, 0) for a row without one."""
    if data.holes is None:
        return 0, 0
    start, end = data.holes[i].tolist()
    return start, end


class PairBuffer:
    """At most `capacity` preference pairs of earlier tasks, an equal share per task (`balanced_quotas`),
    each with the reference log-probs it was trained against (the model at its task's start)."""

    def __init__(self, capacity: int, gen: torch.Generator):
        self.capacity, self.gen = capacity, gen
        self.rows: list[torch.Tensor] = []  # 1-D token ids, two per pair: chosen, rejected
        self.starts: list[int] = []  # answer start of each row
        self.tasks: list[int] = []  # the task of each pair
        self.refs: list[torch.Tensor] = []  # (2,) reference log-probs of each pair
        self._packed: EncodedSet | None = None

    def __len__(self) -> int:
        return len(self.tasks)

    def add(self, data: EncodedSet, task: int) -> None:
        """Keep a uniform sample of task `task`'s pairs (`data.reference` set) within its quota."""
        assert data.pairs and data.reference is not None, "a pair buffer takes pairs with their reference"
        quota, keep = balanced_quotas(self.capacity, task + 1), []
        for t in range(task):  # shrink every earlier share to its new quota, uniformly
            pairs = [i for i, owner in enumerate(self.tasks) if owner == t]
            keep += [
                pairs[int(j)]
                for j in torch.randperm(len(pairs), generator=self.gen)[: quota[t]].sort().values
            ]
        self.rows = [r for i in keep for r in self.rows[2 * i : 2 * i + 2]]
        self.starts = [s for i in keep for s in self.starts[2 * i : 2 * i + 2]]
        self.tasks, self.refs = [self.tasks[i] for i in keep], [self.refs[i] for i in keep]
        for i in torch.randperm(len(data), generator=self.gen)[: quota[task]].sort().values.tolist():
            for r in (2 * i, 2 * i + 1):
                self.rows.append(data.ids[r, : data.lengths[r]].clone())
                self.starts.append(int(data.target_start[r]))
            self.tasks.append(task)
            self.refs.append(data.reference[i].clone())
        self._packed = None

    def sample(
        self, n: int, prefix_len: int, pad_id: int, for_rank: ForRank = same_generator
    ) -> tuple[Batch, torch.Tensor, list[int]]:
        """`n` pairs drawn uniformly (from `for_rank(gen)`): their 2n rows (chosen rows first),
        reference (n, 2), tasks."""
        picks = torch.randint(len(self), (n,), generator=for_rank(self.gen))
        if self._packed is None:
            ids, _ = pad_rows(self.rows, pad_id)  # (2P, W)
            lengths = torch.tensor([len(r) for r in self.rows], dtype=torch.long)
            starts = torch.tensor(self.starts, dtype=torch.long)
            self._packed = EncodedSet(ids, lengths, starts, prefix_len, pairs=True)
        refs = torch.stack(self.refs)[picks]  # (n, 2)
        return self._packed.batch(picks), refs, [self.tasks[i] for i in picks.tolist()]

    def state_dict(self, prefix: str) -> dict[str, Any]:
        state: dict[str, Any] = {f"{prefix}gen": self.gen.get_state()}
        if self.tasks:
            ids, _ = pad_rows(self.rows, 0)
            state |= {
                f"{prefix}ids": ids,
                f"{prefix}lengths": torch.tensor([len(r) for r in self.rows], dtype=torch.long),
                f"{prefix}starts": torch.tensor(self.starts, dtype=torch.long),
                f"{prefix}tasks": torch.tensor(self.tasks, dtype=torch.long),
                f"{prefix}refs": torch.stack(self.refs),
            }
        return state

    def load_state_dict(self, state: dict[str, Any], prefix: str) -> None:
        self.gen.set_state(state[f"{prefix}gen"])
        self.rows, self.starts, self.tasks, self.refs, self._packed = [], [], [], [], None
        if f"{prefix}ids" in state:
            ids, lengths = state[f"{prefix}ids"], state[f"{prefix}lengths"]
            self.rows = [ids[i, : lengths[i]].clone() for i in range(len(lengths))]
            self.starts = [int(s) for s in state[f"{prefix}starts"]]
            self.tasks = [int(t) for t in state[f"{prefix}tasks"]]
            self.refs = list(state[f"{prefix}refs"])


def balanced_quotas(capacity: int, n_tasks: int) -> list[int]:
    """`capacity` slots dealt out to `n_tasks` tasks in turn, earliest first: they sum to at most
    `capacity`, differ by at most one, and each task's count only shrinks as `n_tasks` grows."""
    return [len(range(t, capacity, n_tasks)) for t in range(n_tasks)]


def frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A frozen, eval-mode copy of the model: the teacher pi of self-replay and KL replay. It notes
    which of the model's parameters were trainable when it was taken (`teacher_state` saves only
    those: the others stay equal in the model for the rest of the task)."""
    teacher = copy.deepcopy(model).eval()
    teacher.requires_grad_(False)
    teacher.moving_names = {n for n, p in model.named_parameters() if p.requires_grad}
    return teacher


def replay_loss(
    kind: str,
    replay: Forward,
    teacher: torch.nn.Module | None,
    temperature: float = 1.0,
    tasks: list[int] | None = None,
    route: Route = no_route,
) -> torch.Tensor:
    """`ntp`: mean next-token loss on the replay rows; `kl`: mean KL(teacher || model) per position,
    at `temperature` (knowledge distillation: both distributions softened, the KL scaled by T^2), the
    teacher reading the rows of task `tasks[i]` inside `route(tasks[i], teacher)`."""
    if kind == "ntp":
        return replay.mean_loss()
    assert teacher is not None, "the KL replay loss needs a teacher"
    with torch.no_grad():
        t_logits = routed_logits(teacher, replay.batch, tasks, route)
    return distill_kl(t_logits, replay.logits, replay.mask, temperature)


def routed_logits(
    model: torch.nn.Module, batch: Batch, tasks: list[int] | None, route: Route
) -> torch.Tensor:
    """`model`'s logits over `batch`, (B, T, V), the rows of task j computed inside `route(j, model)`
    (e.g. with task j's adapter); one forward over every row when no task's route switches weights."""

    def forward(rows: list[int] | None) -> tuple[torch.Tensor]:
        part = batch if rows is None else batch.select(torch.tensor(rows, device=batch.input_ids.device))
        return (model(input_ids=part.input_ids, attention_mask=part.attention_mask).logits,)

    return per_task_rows(tasks or [], route, model, forward)[0]


def distill_kl(
    t_logits: torch.Tensor, s_logits: torch.Tensor, mask: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """Mean over the masked positions of T^2 * KL(softmax(t / T) || softmax(s / T)).

    The logits are (B, T, V) of the same rows; the last position predicts nothing and is dropped, so
    `mask` is (B, T-1). At T = 1 this is the plain KL; the T^2 keeps the gradient's scale the same
    across temperatures (Hinton et al. 2015).
    """
    t_logp = F.log_softmax(t_logits[:, :-1].float() / temperature, dim=-1)  # (B, T-1, V)
    s_logp = F.log_softmax(s_logits[:, :-1].float() / temperature, dim=-1)  # (B, T-1, V)
    kl = (t_logp.exp() * (t_logp - s_logp)).sum(-1)  # (B, T-1)
    return temperature**2 * (kl * mask).sum() / mask.sum().clamp(min=1.0)


def rows_of(view: Forward, rows: slice) -> Forward:
    """The part of a forward pass over rows `rows`."""
    return Forward(view.batch.select(rows), view.logits[rows], view.token_loss[rows], view.mask[rows])


def replay_rows(fraction: float, batch_size: int) -> int:
    """Replay rows per step: `fraction` of the task batch (0.25 = 64 replay rows next to 256 new)."""
    return max(1, round(fraction * batch_size))


class ReplayConfig(MethodConfig):
    name: Literal["replay"] = "replay"
    buffer_size: int = Field(default=1000, ge=1)  # rows kept over all tasks
    balanced: bool = True  # an equal share of the buffer per task (else in proportion to task size)
    replay_fraction: float = Field(default=0.25, gt=0)  # replay rows per step / task rows per step
    loss: Literal["ntp", "kl"] = "ntp"  # kl distils the model frozen at the task's start
    coef: float = Field(default=1.0, ge=0)  # total loss = task loss + coef * replay loss
    kl_temperature: float = Field(default=1.0, gt=0)  # with loss: kl, distil at this T (scaled by T^2)

    @model_validator(mode="after")
    def _check(self) -> ReplayConfig:
        check_kl_temperature(self.loss, self.kl_temperature)
        return self


def check_kl_temperature(loss: str, kl_temperature: float) -> None:
    if kl_temperature != 1.0 and loss != "kl":
        raise ValueError("kl_temperature applies to the KL replay loss only: set loss: kl")


class Replay(Method):
    def __init__(self, cfg: ReplayConfig):
        self.cfg = cfg
        self.teacher: torch.nn.Module | None = None
        self.tasks: list[int] = []  # the task of each replay row of this step (the teacher's route)
        self.n_plain = 0  # replay rows of this step from the row buffer; the pairs come after them
        self.pair_refs: torch.Tensor | None = None  # (P, 2) reference log-probs of this step's pairs
        self.pair_beta: torch.Tensor | None = None  # (P,) the DPO beta of each pair's task

    def setup(self, model, ctx):
        self.ctx = ctx
        self.buffer = ReplayBuffer(
            self.cfg.buffer_size, generator(ctx.seed, "replay-buffer"), self.cfg.balanced
        )
        # this process's share of the replay rows (all of them on one process)
        self.n_rows = ctx.share(replay_rows(self.cfg.replay_fraction, ctx.batch_size))
        self.pairs = PairBuffer(self.cfg.buffer_size, generator(ctx.seed, "replay-pairs"))
        return model

    def before_task(self, task_index, model) -> None:
        if self.cfg.loss == "kl" and len(self.buffer):
            self.teacher = frozen_copy(model)

    def replay_batch(self, task_index, step, model):
        """`n_rows` replay rows: from the row buffer, or as pairs (half as many, two rows each) from the
        pair buffer, or half of each when both hold examples."""
        stream, parts = self.ctx.stream, []
        both = len(self.buffer) and len(self.pairs)
        self.n_plain, self.pair_refs, self.pair_beta = 0, None, None
        if not self.n_rows:  # a rank whose share of the replay rows is none
            return None
        if len(self.buffer):
            self.n_plain = max(1, self.n_rows // 2) if both else self.n_rows
            batch, self.tasks = self.buffer.sample(
                self.n_plain, stream.prefix_len, stream.pad_id, self.ctx.loss_on, self.ctx.for_rank
            )
            parts.append(batch)
        if len(self.pairs):
            n_pairs = max(1, self.n_rows // (4 if both else 2))
            batch, self.pair_refs, tasks = self.pairs.sample(
                n_pairs, stream.prefix_len, stream.pad_id, self.ctx.for_rank
            )
            self.pair_beta = torch.tensor([stream.tasks[t].beta for t in tasks])
            parts.append(batch)
        return concat(parts, stream.pad_id) if parts else None

    def loss_terms(self, model, task, replay):
        if replay is None:
            return {}
        terms = {}
        if self.n_plain:
            t = self.cfg.kl_temperature
            plain = rows_of(replay, slice(0, self.n_plain))
            loss = replay_loss(self.cfg.loss, plain, self.teacher, t, self.tasks, self.ctx.route)
            terms[self.cfg.loss] = self.cfg.coef * loss
        if self.pair_refs is not None:
            policy = pair_logprobs(replay.token_loss[self.n_plain :])  # (P, 2)
            loss, _ = dpo_loss(policy, self.pair_refs, self.pair_beta.to(policy.device))
            terms["dpo"] = self.cfg.coef * loss
        return terms

    def after_task(self, task_index, model) -> None:
        data = self.ctx.stream.tasks[task_index].train
        (self.pairs if data.pairs else self.buffer).add(data, task_index)
        self.teacher = None

    def state_dict(self) -> dict[str, Any]:
        return (
            self.buffer.state_dict("buffer.") | self.pairs.state_dict("pairs.") | teacher_state(self.teacher)
        )

    def load_state_dict(self, state: dict[str, Any], model) -> None:
        self.buffer.load_state_dict(state, "buffer.")
        if "pairs.gen" in state:
            self.pairs.load_state_dict(state, "pairs.")
        self.teacher = load_teacher(state, model)


def teacher_state(teacher: torch.nn.Module | None) -> dict[str, torch.Tensor]:
    """The teacher's tensors a checkpoint needs: the parameters that were trainable when it was taken
    and every buffer. A frozen parameter is the model's own until the task ends, so a teacher over a
    frozen base (LoRA, prompts) saves megabytes, not a second copy of the base."""
    if teacher is None:
        return {}
    buffers = {n for n, _ in teacher.named_buffers()}
    kept = teacher.moving_names | buffers
    return {f"teacher.{k}": v for k, v in teacher.state_dict().items() if k in kept}


def load_teacher(state: dict[str, Any], model: torch.nn.Module) -> torch.nn.Module | None:
    """A frozen copy of `model` holding the saved `teacher.*` tensors (the rest: the model's own,
    unchanged since the teacher was taken), or None if none were saved."""
    weights = {k.removeprefix("teacher."): v for k, v in state.items() if k.startswith("teacher.")}
    if not weights:
        return None
    teacher = frozen_copy(model)
    unexpected = teacher.load_state_dict(weights, strict=False).unexpected_keys
    if unexpected:
        raise UserError(f"a checkpoint's teacher holds tensors the model lacks: {', '.join(unexpected[:3])}")
    teacher.moving_names = {n for n, _ in teacher.named_parameters() if n in weights}
    return teacher


register("replay", ReplayConfig, Replay)
