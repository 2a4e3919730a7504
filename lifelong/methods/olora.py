"""O-LoRA (Wang et al. 2023): a LoRA adapter per task, each learned in a subspace orthogonal to the
earlier tasks' adapters.

Adapters as in `lora_per_task` (all created at setup, the base and earlier adapters frozen). While
task t trains, the loss adds

    coef * sum over adapted layers, over earlier tasks s < t, of ||A_t A_s^T||_F^2

where A is an adapter's down-projection, (r, in_features): the overlap between the row space of the
new adapter and of the frozen ones. The tensors are collected once per task in `before_task`.
Inference defaults to `merged` (every adapter so far summed, no task identity needed): keeping the
subspaces apart is what lets the summed adapters not interfere.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Literal

import torch
from pydantic import Field

from lifelong.methods.base import Compatibility, register
from lifelong.methods.lora import Adapters, LoraOptions, add_adapters
from lifelong.methods.lora_per_task import task_adapters


class OLoraConfig(LoraOptions):
    name: Literal["olora"] = "olora"
    coef: float = Field(default=0.5, ge=0)  # weight of the overlap penalty (lambda_1 of the paper)
    inference: Literal["merged", "routed"] = "merged"


class OLora:
    # The trainable set changes at each task, which DistributedDataParallel does not allow.
    compatibility = Compatibility(kind="adapter", distributed=False)

    def __init__(self, cfg: OLoraConfig):
        self.cfg = cfg
        self.task = -1
        self.pairs: list[tuple[torch.Tensor, list[torch.Tensor]]] = []  # (A_new, [A_old...]) per layer

    def setup(self, model, ctx):
        self.names = task_adapters(len(ctx.stream.tasks))
        model = add_adapters(model, self.cfg, self.names)
        self.adapters = Adapters(model, self.names)
        self.adapters.select(self.active(0), [self.names[0]])
        return model

    def active(self, task_index: int) -> list[str]:
        return self.names[: task_index + 1] if self.cfg.inference == "merged" else [self.names[task_index]]

    def train_examples(self, task_index, stream):
        return None

    def before_task(self, task_index, model) -> None:
        self.task = task_index
        base_trains = self.cfg.train_base_on_first_task and task_index == 0
        self.adapters.select(self.active(task_index), [self.names[task_index]], base_trains)
        new = self.adapters.lora_A(self.names[task_index])
        old = [self.adapters.lora_A(n) for n in self.names[:task_index]]
        self.pairs = [(a, [o[i] for o in old]) for i, a in enumerate(new)] if old else []

    def replay_batch(self, task_index, step, model):
        return None

    def overlap(self) -> torch.Tensor:
        """sum over layers and earlier adapters of ||A_new A_old^T||_F^2."""
        return sum(
            ((a_new @ a_old.T) ** 2).sum()  # (r, r) -> ()
            for a_new, olds in self.pairs
            for a_old in olds
        )

    def loss_terms(self, model, task, replay):
        if not self.pairs:
            return {}
        return {"olora": self.cfg.coef * self.overlap()}

    def after_task(self, task_index, model) -> None:
        pass

    def route(self, task_index, model):
        if self.cfg.inference == "merged":
            return nullcontext()
        return self.adapters.only([self.names[task_index]], model)

    def state_dict(self) -> dict[str, Any]:
        return {"task": self.task}

    def load_state_dict(self, state: dict[str, Any], model) -> None:
        if state["task"] >= 0:
            self.before_task(int(state["task"]), model)


register(
    "olora",
    OLoraConfig,
    OLora,
    "O-LoRA: a LoRA adapter per task, kept orthogonal to the earlier ones by a penalty",
)
