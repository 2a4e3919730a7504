"""LAMOL-style generative replay (Sun et al. 2020): at each task's start, the model being trained writes
a fixed pool of pseudo-examples of every earlier task, which are replayed with the next-token loss.

When task k starts (k >= 2), the model generates `samples_per_task` rows per earlier task, each
prompted by that task's prefix (its token), by ancestral sampling at `temperature` and cut after the
first eos, as self-replay's samples are. The pool stays fixed for the whole task (self_replay instead
samples from a frozen copy and refreshes in chunks). Each step draws `round(replay_fraction *
batch_size)` rows of the pool uniformly, trained with the next-token loss weighted by `coef`. The
pool and the generator are saved in checkpoints, so a resumed run replays the same rows. Next to a
method that routes per task (`lora_per_task`, progressive prompts, ...), task j's rows are written
inside the run's `route(j, model)`, with the weights task j is scored with.

Train with the loss on the whole sequence (`train.loss_on: sequence`, the default), so that the model
learns to write its tasks' inputs as well as their answers.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field

from lifelong.data.batching import Batch
from lifelong.errors import UserError
from lifelong.methods.base import Method, MethodConfig, register
from lifelong.methods.replay import replay_rows
from lifelong.methods.self_replay import generate_routed, samples_batch
from lifelong.seeding import generator


class LamolConfig(MethodConfig):
    name: Literal["lamol"] = "lamol"
    samples_per_task: int = Field(default=256, ge=1)  # pseudo-examples written per earlier task
    replay_fraction: float = Field(default=0.25, gt=0)  # replay rows per step / task rows per step
    coef: float = Field(default=1.0, ge=0)  # total loss = task loss + coef * replay loss
    temperature: float = Field(default=1.0, gt=0)  # of the sampling (no top-k / top-p)
    sample_batch_size: int = Field(default=1024, ge=1)  # rows generated per forward


class Lamol(Method):
    def __init__(self, cfg: LamolConfig):
        self.cfg = cfg
        self.pool: Batch | None = None  # this task's pseudo-examples, fixed for the task
        self.pool_tasks: torch.Tensor | None = None  # (N,) long: which earlier task each row is of

    def setup(self, model, ctx):
        bare = next((t.name for t in ctx.stream.tasks if not t.prefix), None)
        if bare is not None:
            raise UserError(
                f"lamol prompts its pseudo-examples of a task with the tokens the task's rows start "
                f"with, and task {bare!r}'s rows start with none (no task token, no bos): use "
                "stream.task_token: true"
            )
        self.ctx = ctx
        self.n_rows = ctx.share(replay_rows(self.cfg.replay_fraction, ctx.batch_size))  # this process's
        # the pool is written from it (the same on every process), the draws from `ctx.for_rank(gen)`
        self.gen = generator(ctx.seed, "lamol", device=ctx.device)
        return model

    def before_task(self, task_index, model) -> None:
        self.pool, self.pool_tasks = None, None
        if task_index == 0:
            return
        stream = self.ctx.stream
        tasks = torch.arange(task_index).repeat_interleave(self.cfg.samples_per_task)  # (N,)
        prompts = [stream.tasks[int(t)].prefix for t in tasks]
        width = min(stream.max_len, self.ctx.max_length)
        out, _ = generate_routed(  # task j's rows written with task j's weights (e.g. its adapter)
            model,
            prompts,
            tasks.tolist(),
            self.ctx.route,
            width - max(len(p) for p in prompts),
            stream.pad_id,
            temperature=self.cfg.temperature,
            generator=self.gen,
            stop_id=stream.eos_id,  # rows are cut after their first eos anyway
            batch_size=self.cfg.sample_batch_size,
        )
        pool = samples_batch(prompts, out.cpu(), stream.eos_id, stream.pad_id)  # out: (N, new)
        self.pool, self.pool_tasks = pool, tasks

    def replay_batch(self, task_index, step, model):
        if self.pool is None or not self.n_rows:
            return None
        gen = self.ctx.for_rank(self.gen)
        picks = torch.randint(len(self.pool), (self.n_rows,), generator=gen, device=gen.device)
        return self.pool.select(picks.cpu())

    def loss_terms(self, model, task, replay):
        if replay is None:
            return {}
        return {"ntp": self.cfg.coef * replay.mean_loss()}

    def after_task(self, task_index, model) -> None:
        self.pool, self.pool_tasks = None, None

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"gen": self.gen.get_state()}
        if self.pool is not None:
            state |= dict(zip(("pool.ids", "pool.attention", "pool.loss"), self.pool.tensors(), strict=True))
            state["pool.tasks"] = self.pool_tasks
        return state

    def load_state_dict(self, state: dict[str, Any], model) -> None:
        self.gen.set_state(state["gen"])
        self.pool, self.pool_tasks = None, None
        if "pool.ids" in state:
            self.pool = Batch(state["pool.ids"], state["pool.attention"], state["pool.loss"].bool())
            self.pool_tasks = state["pool.tasks"]


register("lamol", LamolConfig, Lamol)
