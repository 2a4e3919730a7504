"""Self-generated replay: the model's own samples of earlier tasks serve as replay data.

At each task's start a frozen copy pi of the model is kept. Replay rows are sampled from pi by plain
ancestral sampling (temperature 1, no top-k/top-p), each prompted by the token of an earlier task,
and refreshed in chunks as training goes. A row is sampled up to the eos that ends a training row
(`stops_per_row`); the rows that reach it leave the batch being decoded, the others run to the
context. The replay loss is `ntp` (next-token loss on the samples) or `kl` (KL(pi || model) over the
sample positions), weighted by `coef`.
With `source: stored`, real examples from a reservoir buffer take the samples' place, same path.

Next to a method that routes per task (`lora_per_task`, progressive prompts, ...), pi is routed as
evaluation routes the model: the samples of task j are drawn, and pi's logits over the rows of task j
computed, inside the run's `route(j, pi)` (task j's adapter, prompts or blocks), the tasks one after
the other; the bos rows of `include_base` inside the route of the newest task pi was trained on.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from lifelong.data.batching import Batch, EncodedStream, pad_rows
from lifelong.errors import UserError
from lifelong.methods.base import Method, MethodConfig, Route, per_task_rows, register
from lifelong.methods.replay import (
    ReplayBuffer,
    check_kl_temperature,
    distill_kl,
    frozen_copy,
    load_teacher,
    replay_loss,
    replay_rows,
    teacher_state,
)
from lifelong.sampling import generate
from lifelong.seeding import generator

# With loss: kl, pi's logits computed while sampling a chunk are kept (instead of a teacher forward
# over the replay rows at every step) when the chunk's (rows x width x vocab) stays under this many
# floats (256 MB); larger vocabularies fall back to the teacher forward.
MAX_CACHED_LOGITS = 2**26
BASE = "base"  # samples.jsonl's name for the rows of include_base
SHOWN_ROWS = 8  # decoded rows per replayed task written to the run's samples.jsonl at each refresh


class SelfReplayConfig(MethodConfig):
    name: Literal["self_replay"] = "self_replay"
    replay_fraction: float = Field(default=0.25, gt=0)  # replay rows per step / task rows per step
    loss: Literal["ntp", "kl"] = "ntp"
    coef: float = Field(default=1.0, ge=0)  # total loss = task loss + coef * replay loss
    refresh_every: int = Field(default=25, ge=1)  # steps served by one chunk of samples
    temperature: float = Field(default=1.0, gt=0)  # of the sampling (kl_temperature: of the KL loss)
    source: Literal["samples", "stored"] = "samples"  # stored: real examples through the same path
    buffer_size: int = Field(default=1000, ge=1)  # with source: stored
    balanced: bool = True  # with source: stored, an equal share of the buffer per task
    include_base: bool = False  # also replay the base model's own distribution, prompted by bos
    sample_batch_size: int = Field(default=1024, ge=1)  # rows generated per forward
    kl_temperature: float = Field(default=1.0, gt=0)  # with loss: kl, distil at this T (scaled by T^2)

    @model_validator(mode="after")
    def _check(self) -> SelfReplayConfig:
        if self.include_base and self.source == "stored":
            raise ValueError("include_base samples the base model; it needs source: samples")
        check_kl_temperature(self.loss, self.kl_temperature)
        return self


class SelfReplay(Method):
    def __init__(self, cfg: SelfReplayConfig):
        self.cfg = cfg
        self.teacher: torch.nn.Module | None = None
        self.chunk: Batch | None = None  # samples not yet served
        self.chunk_logits: torch.Tensor | None = None  # (n, T, V) pi's logits over the chunk, for kl
        self.chunk_tasks: torch.Tensor | None = None  # (n,) long: the task whose route each row took
        self.batch_logits: torch.Tensor | None = None  # those of the rows served at this step
        self.batch_tasks: list[int] | None = None  # and their tasks (also of stored rows)
        self.served = 0  # rows of the chunk already used
        self.fresh_base: list[bool] = []  # which rows of the newest chunk were prompted by bos alone

    def setup(self, model, ctx):
        self.ctx = ctx
        self.vocab_size = model.get_output_embeddings().weight.shape[0]
        # this process's share of the replay rows (all of them on one process)
        self.n_rows = ctx.share(replay_rows(self.cfg.replay_fraction, ctx.batch_size))
        self.gen = generator(ctx.seed, "self-replay", device=ctx.device)
        self.buffer = ReplayBuffer(
            self.cfg.buffer_size, generator(ctx.seed, "self-replay-buffer"), self.cfg.balanced
        )
        bare = next((t.name for t in ctx.stream.tasks if not t.prefix), None)
        if self.cfg.source == "samples" and bare is not None:
            raise UserError(
                f"self_replay prompts its samples of a task with the tokens the task's rows start with, and "
                f"task {bare!r}'s rows start with none (no task token, no bos): use source: stored, or "
                "stream.task_token: true"
            )
        bos = ctx.tokenizer.bos_token_id
        if self.cfg.include_base and bos is None:
            raise UserError("self_replay include_base needs a tokenizer with a bos token")
        self.base_prompt = [bos] if self.cfg.include_base else None
        return model

    def prompts(self, task_index: int) -> list[list[int]]:
        earlier = [t.prefix for t in self.ctx.stream.tasks[:task_index]]
        return earlier + ([self.base_prompt] if self.base_prompt else [])

    def prompt_tasks(self, task_index: int) -> list[int]:
        """The task whose route samples each prompt: its own; bos: the newest task pi was trained on."""
        return list(range(task_index)) + ([max(task_index - 1, 0)] if self.base_prompt else [])

    def before_task(self, task_index, model) -> None:
        self.chunk, self.served = None, 0
        has_old = self.prompts(task_index) if self.cfg.source == "samples" else len(self.buffer)
        needs_teacher = self.cfg.source == "samples" or self.cfg.loss == "kl"
        self.teacher = frozen_copy(model) if has_old and needs_teacher else None

    def replay_batch(self, task_index, step, model):
        stream = self.ctx.stream
        if not self.n_rows:  # a rank whose share of the replay rows is none
            return None
        if self.cfg.source == "stored":
            if not len(self.buffer):
                return None
            batch, self.batch_tasks = self.buffer.sample(
                self.n_rows, stream.prefix_len, stream.pad_id, self.ctx.loss_on, self.ctx.for_rank
            )
            return batch
        if self.teacher is None:
            return None
        if self.chunk is None or self.served >= len(self.chunk):
            self.chunk, self.served = self.sample_chunk(task_index), 0
            self.show_samples(task_index, step)
        rows = slice(self.served, self.served + self.n_rows)
        self.served += self.n_rows
        self.batch_logits = None if self.chunk_logits is None else self.chunk_logits[rows]
        self.batch_tasks = None if self.chunk_tasks is None else self.chunk_tasks[rows].tolist()
        return self.chunk.select(rows)

    def sample_chunk(self, task_index: int) -> Batch:
        """`refresh_every` steps' worth of full-length samples from pi, spread over earlier tasks."""
        stream, prompts = self.ctx.stream, self.prompts(task_index)
        n = self.n_rows * self.cfg.refresh_every
        gen = self.ctx.for_rank(self.gen)  # each process samples its own rows
        which = torch.randint(len(prompts), (n,), generator=gen, device=gen.device).tolist()
        chosen = [prompts[i] for i in which]
        prompt_tasks = self.prompt_tasks(task_index)
        tasks = [prompt_tasks[i] for i in which]
        width = min(stream.max_len, self.ctx.max_length)
        new = width - max(len(p) for p in chosen)
        keep_logits = self.cfg.loss == "kl" and n * width * self.vocab_size <= MAX_CACHED_LOGITS
        stops = stops_per_row(stream)
        # rows end at their first eos (samples_batch cuts there): a finished row leaves the batch
        early = stops == 1 and not self.base_prompt
        tokens, logits = generate_routed(
            self.teacher,
            chosen,
            tasks,
            self.ctx.route,
            new,
            stream.pad_id,
            temperature=self.cfg.temperature,
            generator=gen,
            batch_size=self.cfg.sample_batch_size,
            return_logits=keep_logits,
            stop_id=stream.eos_id if early else None,
            drop_finished=early,
        )
        self.chunk_logits = None if logits is None else teacher_logits_by_position(chosen, logits.cpu())
        self.chunk_tasks = torch.tensor(tasks)
        # a task's samples end where its rows do; the base model's (include_base) run full length, the
        # way the base would go on (a chat model: turn after turn)
        base = len(prompt_tasks) - 1 if self.base_prompt else -1
        row_stops = [tokens.shape[1] if i == base else stops for i in which]
        self.fresh_base = [i == base for i in which]  # for show_samples, right after
        return samples_batch(chosen, tokens.cpu(), stream.eos_id, stream.pad_id, row_stops)

    def show_samples(self, task_index: int, step: int) -> None:
        """The first SHOWN_ROWS rows of the fresh chunk per replayed task, decoded, into samples.jsonl."""
        stream, chunk = self.ctx.stream, self.chunk
        names = [t.name for t in stream.tasks]
        # a base row (include_base) is named "base": it is routed as a task but prompted by bos alone
        routed = self.chunk_tasks.tolist()
        replayed = [BASE if base else names[j] for j, base in zip(routed, self.fresh_base, strict=True)]
        rows, shown = [], dict.fromkeys(set(replayed), 0)
        for i, name in enumerate(replayed):
            if shown[name] < SHOWN_ROWS:
                shown[name] += 1
                ids = chunk.input_ids[i][chunk.attention_mask[i].bool()].tolist()
                rows.append({"task": name, "text": self.ctx.tokenizer.decode(ids)})
        self.ctx.write_sample("samples", {"training": names[task_index], "step": step, "rows": rows})

    def loss_terms(self, model, task, replay):
        if replay is None:
            return {}
        if self.batch_logits is not None:  # pi's logits kept from sampling: no teacher forward
            t_logits = self.batch_logits[:, : replay.logits.shape[1]].to(replay.logits.device)
            loss = distill_kl(t_logits, replay.logits, replay.mask, self.cfg.kl_temperature)
        else:
            t = self.cfg.kl_temperature
            loss = replay_loss(self.cfg.loss, replay, self.teacher, t, self.batch_tasks, self.ctx.route)
        return {self.cfg.loss: self.cfg.coef * loss}

    def after_task(self, task_index, model) -> None:
        if self.cfg.source == "stored":
            self.buffer.add(self.ctx.stream.tasks[task_index].train, task_index)
        self.teacher, self.chunk, self.chunk_logits, self.batch_logits = None, None, None, None
        self.chunk_tasks, self.batch_tasks = None, None

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"gen": self.gen.get_state(), "served": self.served}
        if self.chunk is not None:
            state |= dict(
                zip(("chunk.ids", "chunk.attention", "chunk.loss"), self.chunk.tensors(), strict=True)
            )
        if self.chunk_logits is not None:
            state["chunk.logits"] = self.chunk_logits
        if self.chunk_tasks is not None:
            state["chunk.tasks"] = self.chunk_tasks
        return state | self.buffer.state_dict("buffer.") | teacher_state(self.teacher)

    def load_state_dict(self, state: dict[str, Any], model) -> None:
        self.gen.set_state(state["gen"])
        self.served = int(state["served"])
        self.chunk = None
        if "chunk.ids" in state:
            self.chunk = Batch(state["chunk.ids"], state["chunk.attention"], state["chunk.loss"].bool())
        self.chunk_logits = state.get("chunk.logits")
        self.chunk_tasks = state.get("chunk.tasks")
        self.batch_logits, self.batch_tasks = None, None  # set again by the next replay_batch
        self.buffer.load_state_dict(state, "buffer.")
        self.teacher = load_teacher(state, model)


def generate_routed(
    model: torch.nn.Module,
    prompts: list[list[int]],
    tasks: list[int],
    route: Route,
    max_new_tokens: int,
    pad_id: int,
    *,
    return_logits: bool = False,
    **sampling: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Sampled continuations of `prompts` (N, max_new_tokens), and with `return_logits` the logits that
    drew them (N, max_new_tokens, V) (else None), the rows of task `tasks[i]` drawn inside
    `route(tasks[i], model)`: the tasks in increasing order, each task's rows in their order, from the
    one generator, so the draws are fixed by the seed. When no task's route switches weights: one pass
    over every row, exactly `generate`. `sampling`: `generate`'s other keywords."""

    def draw(rows: list[int] | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        chosen = prompts if rows is None else [prompts[i] for i in rows]
        out = generate(
            model, chosen, max_new_tokens, pad_id, greedy=False, return_logits=return_logits, **sampling
        )
        return out if return_logits else (out, None)

    tokens, logits = per_task_rows(tasks, route, model, draw)
    return tokens, logits


def teacher_logits_by_position(prompts: list[list[int]], logits: torch.Tensor) -> torch.Tensor:
    """The sampling logits (n, new, V) placed where a forward over `prompt + sampled` rows puts them:
    the logits predicting sampled token k of row i sit at position len(prompt_i) - 1 + k."""
    n, new, vocab = logits.shape
    width = max(len(p) for p in prompts) + new
    placed = torch.zeros((n, width, vocab), dtype=logits.dtype)
    for length in {len(p) for p in prompts}:
        rows = torch.tensor([i for i, p in enumerate(prompts) if len(p) == length])
        placed[rows, length - 1 : length - 1 + new] = logits[rows]
    return placed


def stops_per_row(stream: EncodedStream) -> int:
    """How many stop tokens a training row holds after its task's prefix: 1 in a plain row (its final
    eos); 2 in a chat row whose prefix ends inside the user turn (the user turn's end of turn, then the
    assistant's), so a sample there is a whole exchange, not only the question."""
    rows = stream.tasks[0].train
    row = rows.ids[0, rows.prefix_len : rows.lengths[0]]  # (L,)
    return max(1, int((row == stream.eos_id).sum()))


def samples_batch(
    prompts: list[list[int]], sampled: torch.Tensor, eos_id: int, pad_id: int, stops: int | list[int] = 1
) -> Batch:
    """Rows `prompt + sampled`, cut after the `stops`-th eos (`stops_per_row`; a list: per row): later
    tokens are not of the data's distribution (training rows end there), so they are masked out of
    attention and loss."""
    new = sampled.shape[1]
    is_eos = (sampled == eos_id).long()  # (n, S)
    limit = torch.as_tensor(stops).reshape(-1, 1)  # (n, 1) or (1, 1)
    keep_new = (is_eos.cumsum(1) - is_eos) < limit  # up to and including the stops-th eos
    rows = [p + sampled[i, keep_new[i]].tolist() for i, p in enumerate(prompts)]
    ids, attention = pad_rows(rows, pad_id, width=max(len(p) for p in prompts) + new)  # (n, W) each
    starts = torch.tensor([len(p) for p in prompts]).unsqueeze(1)  # (n, 1)
    loss = attention.bool() & (torch.arange(ids.shape[1]) >= starts)  # the prompt is given, not predicted
    return Batch(ids, attention, loss)


register("self_replay", SelfReplayConfig, SelfReplay)
