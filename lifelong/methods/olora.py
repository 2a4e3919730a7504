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

from typing import Literal

import torch
from pydantic import Field

from lifelong.methods.base import Compatibility, SelectsPerTask, register
from lifelong.methods.lora import LoraOptions, PerTaskAdapters


class OLoraConfig(LoraOptions):
    name: Literal["olora"] = "olora"
    coef: float = Field(default=0.5, ge=0)  # weight of the overlap penalty (lambda_1 of the paper)
    inference: Literal["merged", "routed"] = "merged"


class OLora(SelectsPerTask):
    # The trainable set changes between tasks: under several processes the loop wraps the model in
    # DistributedDataParallel again then (train.py `rewrap`).
    compatibility = Compatibility(kind="adapter", exports=False)

    def __init__(self, cfg: OLoraConfig):
        super().__init__(cfg)
        self.pairs: list[tuple[torch.Tensor, list[torch.Tensor]]] = []  # (A_new, [A_old...]) per layer

    def setup(self, model, ctx):
        self.per_task = PerTaskAdapters(model, self.cfg, len(ctx.stream.tasks), self.cfg.inference)
        self.adapters = self.per_task.adapters
        self.select(0)
        return self.per_task.model

    def select(self, task_index: int) -> None:
        self.per_task.select(task_index)
        names, adapters = self.per_task.names, self.per_task.adapters
        new = adapters.lora_A(names[task_index])
        old = [adapters.lora_A(n) for n in names[:task_index]]
        self.pairs = [(a, [o[i] for o in old]) for i, a in enumerate(new)] if old else []

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
        return {"overlap": self.cfg.coef * self.overlap()}

    def route(self, task_index, model):
        return self.per_task.route(task_index, model)


register("olora", OLoraConfig, OLora)
