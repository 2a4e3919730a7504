"""Feature regularization: keep the model's representations of the new task's inputs close to those
of a frozen copy taken at the task's start.

`target: hidden` penalises the mean squared difference between the output of one decoder block
(`layer`, the last by default) of the model and of the frozen copy, over the task rows' real tokens;
`target: logits` penalises KL(copy || model) of the next-token distributions over the positions the
task loss reads. Either is weighted by `coef`. The copy is taken from the second task on (from the
first with `include_base`, to stay near a pretrained model).

Next to a method that routes per task (`lora_per_task`, progressive prompts, ...), the copy reads the
rows of task j inside the run's `route(j, copy)`, j read from each row's task token.

The model's side costs nothing extra: a forward hook on the block keeps its output during the
training forward (training mode with gradients on; evaluation and sampling are not kept), and the
loss reads the task rows from it. Only if no training forward went through the block since the last
step does `loss_terms` run one itself. The copy's side is one no-grad forward of the task batch.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, Literal

import torch
from pydantic import Field

from lifelong.data.batching import Batch
from lifelong.errors import UserError
from lifelong.methods.base import Method, MethodConfig, per_task_rows, register, row_tasks
from lifelong.methods.replay import distill_kl, frozen_copy, load_teacher, routed_logits, teacher_state


class FeatureRegConfig(MethodConfig):
    name: Literal["feature_reg"] = "feature_reg"
    target: Literal["hidden", "logits"] = "hidden"  # hidden: MSE of a block's output; logits: KL
    layer: int = -1  # with target: hidden, which decoder block's output (Python index; -1: the last)
    coef: float = Field(default=1.0, ge=0)  # total loss = task loss + coef * feature loss
    include_base: bool = False  # also keep the base model's features during the first task


class FeatureReg(Method):
    def __init__(self, cfg: FeatureRegConfig):
        self.cfg = cfg
        self.teacher: torch.nn.Module | None = None
        self.block: torch.nn.Module | None = None  # the hooked decoder block of the model
        self.student_out: list[torch.Tensor] = []  # its outputs in training forwards since the last step
        self.teacher_out: list[torch.Tensor] = []  # the copy's block outputs

    def setup(self, model, ctx):
        self.ctx = ctx
        if self.cfg.target == "hidden":
            blocks = decoder_blocks(model)
            if not -len(blocks) <= self.cfg.layer < len(blocks):
                raise UserError(f"feature_reg layer {self.cfg.layer} does not exist: {len(blocks)} blocks")
            self.block = blocks[self.cfg.layer]
            self.block.register_forward_hook(keep_output(self.student_out, training_only=True))
        return model

    def before_task(self, task_index, model) -> None:
        if task_index > 0 or self.cfg.include_base:
            self.set_teacher(frozen_copy(model), model)

    def set_teacher(self, teacher: torch.nn.Module | None, model: torch.nn.Module) -> None:
        self.teacher = teacher
        if teacher is not None and self.block is not None:
            name = next(n for n, m in model.named_modules() if m is self.block)
            teacher.get_submodule(name).register_forward_hook(keep_output(self.teacher_out))

    def loss_terms(self, model, task, replay):
        if self.teacher is None:
            self.student_out.clear()
            return {}
        batch = task.batch
        tasks = row_tasks(batch, self.ctx.stream)  # the teacher reads task j's rows routed to task j
        if self.cfg.target == "logits":
            with torch.no_grad():
                t_logits = routed_logits(self.teacher, batch, tasks, self.ctx.route)
            return {"kl": self.cfg.coef * distill_kl(t_logits, task.logits, task.mask)}
        if not self.student_out:  # no training forward went through the hook: run one
            model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
        rows, width = len(batch), batch.input_ids.shape[1]
        first = self.student_out[0]  # the task rows come first in the step's first forward
        assert first.shape[0] >= rows and first.shape[1] >= width, "the kept output is not the step's"
        # The last `width` positions are the input's: prompt tuning puts its virtual tokens in front.
        student = first[:rows, -width:].float()  # (B, T, H)
        self.student_out.clear()
        with torch.no_grad():
            (teacher,) = per_task_rows(
                tasks, self.ctx.route, self.teacher, partial(self.teacher_hidden, batch)
            )
        teacher = teacher[:, -width:].float()  # (B, T, H)
        mask = batch.attention_mask.float()  # (B, T)
        mse = ((student - teacher) ** 2).mean(-1)  # (B, T)
        return {"mse": self.cfg.coef * (mse * mask).sum() / mask.sum().clamp(min=1.0)}

    def teacher_hidden(self, batch: Batch, rows: list[int] | None) -> tuple[torch.Tensor]:
        """The teacher's output of the hooked block over `rows` of `batch` (None: every row)."""
        part = batch if rows is None else batch.select(torch.tensor(rows, device=batch.input_ids.device))
        self.teacher(input_ids=part.input_ids, attention_mask=part.attention_mask)
        out = self.teacher_out.pop()
        self.teacher_out.clear()
        return (out,)

    def after_task(self, task_index, model) -> None:
        self.teacher = None

    def state_dict(self) -> dict[str, Any]:
        return teacher_state(self.teacher)

    def load_state_dict(self, state: dict[str, Any], model) -> None:
        self.set_teacher(load_teacher(state, model), model)


def decoder_blocks(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The model's stack of decoder blocks: the first ModuleList with one entry per hidden layer
    (Llama's `model.layers`, GPT-2's `transformer.h`, also inside a PEFT wrapper)."""
    n = model.config.num_hidden_layers
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n:
            return module
    raise UserError(f"feature_reg found no list of {n} decoder blocks in {type(model).__name__}")


def keep_output(store: list[torch.Tensor], training_only: bool = False) -> Callable:
    """A forward hook appending the module's output (its first element if a tuple) to `store`.

    A plain closure, not a bound method: `frozen_copy` deep-copies the model with its hooks, and a
    copied closure is the same function (the copy's forwards are eval/no-grad, so `training_only`
    keeps them out)."""

    def hook(module, args, output):
        if training_only and not (module.training and torch.is_grad_enabled()):
            return
        store.append(output[0] if isinstance(output, tuple) else output)

    return hook


register("feature_reg", FeatureRegConfig, FeatureReg)
