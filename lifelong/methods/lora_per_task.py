"""One LoRA adapter per task (stock PEFT): task k trains adapter k, the base and earlier adapters stay
frozen, so what earlier tasks learned cannot be overwritten.

Every adapter is created at setup (one per task of the stream), so the model's modules never change
during the run (checkpoints, resume and Accelerate see one structure); `before_task` only selects
which adapter trains and which are active. Inference:
- `routed` (the default): task i is scored with adapter i alone, the adapter chosen by the task of
  the evaluated rows, i.e. by their task token. Every sequence in `lifelong` starts with its task's
  token, so the task is always known; routing then keeps each task's scores exactly as they were
  after its training (no interference at all).
- `merged`: every adapter trained so far is active (their updates summed), for every task. No task
  identity needed at inference, but the adapters interfere.
"""

from __future__ import annotations

from typing import Literal

from lifelong.methods.base import Compatibility, SelectsPerTask, register
from lifelong.methods.lora import LoraOptions, PerTaskAdapters


class LoraPerTaskConfig(LoraOptions):
    name: Literal["lora_per_task"] = "lora_per_task"
    inference: Literal["routed", "merged"] = "routed"  # routed: task i's own adapter scores task i


class LoraPerTask(SelectsPerTask):
    # The trainable set changes at each task: under several processes the loop wraps the model in
    # DistributedDataParallel again (train.py `rewrap`).
    compatibility = Compatibility(kind="adapter", exports=False)

    def setup(self, model, ctx):
        self.per_task = PerTaskAdapters(model, self.cfg, len(ctx.stream.tasks), self.cfg.inference)
        self.adapters = self.per_task.adapters
        self.select(0)
        return self.per_task.model

    def select(self, task_index: int) -> None:
        self.per_task.select(task_index)

    def route(self, task_index, model):
        return self.per_task.route(task_index, model)


register("lora_per_task", LoraPerTaskConfig, LoraPerTask)
