"""Learning without Forgetting (Li & Hoiem 2016), for language models: distil the old model's
next-token distribution on the new task's inputs.

At each task's start from the second on (from the first with `include_base`), a frozen copy of the
model is kept as the teacher. Every step adds

    coef * T^2 * KL(softmax(teacher / T) || softmax(model / T))

averaged over the positions the loss reads, on one of two views of the new task's rows:

- `inputs: own`: the task batch as it is, read from the training forward (no extra forward of the
  model). The old model's guesses for the new task's own prompts.
- `inputs: old_prefix`: `round(replay_fraction * batch_size)` rows of the new task, each with its
  task token swapped for an earlier task's (chosen uniformly): what the old model answers *as an
  earlier task* on the new inputs. This is LwF's "old heads on new data" when tasks are told apart
  by their token; the rows join the training forward, so they cost their share of forward/backward.

Next to a method that routes per task (`lora_per_task`, progressive prompts, ...), the teacher reads
the rows of task j inside the run's `route(j, teacher)`, j read from each row's task token: with
`old_prefix`, an earlier task's adapter or prompts answer for it.

Extra compute per step: one no-grad forward of the teacher on the distilled rows. Stored: the
teacher's weights (a full copy of the model) and, with `old_prefix`, the generator's state.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field

from lifelong.data.batching import Batch
from lifelong.methods.base import Method, MethodConfig, register, row_tasks
from lifelong.methods.replay import (
    distill_kl,
    frozen_copy,
    load_teacher,
    replay_rows,
    routed_logits,
    teacher_state,
)
from lifelong.seeding import generator


class LwFConfig(MethodConfig):
    name: Literal["lwf"] = "lwf"
    coef: float = Field(default=1.0, ge=0)  # total loss = task loss + coef * distillation loss
    temperature: float = Field(default=2.0, gt=0)  # T > 1 also distils the ranking of unlikely tokens
    inputs: Literal["own", "old_prefix"] = "own"  # see the module docstring
    replay_fraction: float = Field(default=0.25, gt=0)  # with old_prefix: distilled rows / task rows
    include_base: bool = False  # also distil the base model during the first task (pretrained models)


class LwF(Method):
    def __init__(self, cfg: LwFConfig):
        self.cfg = cfg
        self.teacher: torch.nn.Module | None = None

    def setup(self, model, ctx):
        self.ctx = ctx
        self.n_rows = ctx.share(replay_rows(self.cfg.replay_fraction, ctx.batch_size))  # this process's
        self.gen = generator(ctx.seed, "lwf")
        return model

    def before_task(self, task_index, model) -> None:
        if task_index > 0 or self.cfg.include_base:
            self.teacher = frozen_copy(model)

    def replay_batch(self, task_index, step, model):
        if self.teacher is None or self.cfg.inputs == "own" or not self.n_rows:
            return None
        tasks = self.ctx.stream.tasks
        data = tasks[task_index].train
        gen = self.ctx.for_rank(self.gen)  # each process draws its own rows
        batch = data.batch(torch.randint(len(data), (self.n_rows,), generator=gen), self.ctx.loss_on)
        earlier = torch.randint(max(task_index, 1), (self.n_rows,), generator=gen)  # base: own token
        ids = batch.input_ids.clone()
        ids[:, : data.prefix_len] = torch.tensor([tasks[int(i)].prefix for i in earlier])  # (B, P)
        return Batch(ids, batch.attention_mask, batch.loss_mask)

    def loss_terms(self, model, task, replay):
        view = task if self.cfg.inputs == "own" else replay
        if self.teacher is None or view is None:
            return {}
        with torch.no_grad():  # the rows of task j read by the teacher routed to task j
            tasks = row_tasks(view.batch, self.ctx.stream)
            t_logits = routed_logits(self.teacher, view.batch, tasks, self.ctx.route)
        return {"kl": self.cfg.coef * distill_kl(t_logits, view.logits, view.mask, self.cfg.temperature)}

    def after_task(self, task_index, model) -> None:
        self.teacher = None

    def state_dict(self) -> dict[str, Any]:
        return {"gen": self.gen.get_state()} | teacher_state(self.teacher)

    def load_state_dict(self, state: dict[str, Any], model) -> None:
        self.gen.set_state(state["gen"])
        self.teacher = load_teacher(state, model)


register("lwf", LwFConfig, LwF)
