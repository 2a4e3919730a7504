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

from contextlib import nullcontext
from typing import Any, Literal

from lifelong.methods.base import Compatibility, register
from lifelong.methods.lora import Adapters, LoraOptions, add_adapters


def task_adapters(n_tasks: int) -> list[str]:
    return [f"task_{i}" for i in range(n_tasks)]


class LoraPerTaskConfig(LoraOptions):
    name: Literal["lora_per_task"] = "lora_per_task"
    inference: Literal["routed", "merged"] = "routed"  # routed: task i's own adapter scores task i


class LoraPerTask:
    # The trainable set changes at each task, which DistributedDataParallel does not allow.
    compatibility = Compatibility(kind="adapter", distributed=False)

    def __init__(self, cfg: LoraPerTaskConfig):
        self.cfg = cfg
        self.task = -1  # the task whose selection is in place

    def setup(self, model, ctx):
        self.names = task_adapters(len(ctx.stream.tasks))
        model = add_adapters(model, self.cfg, self.names)
        self.adapters = Adapters(model, self.names)
        self.adapters.select(self.active(0), [self.names[0]])
        return model

    def active(self, task_index: int) -> list[str]:
        """The adapters in the forward while task `task_index` trains (and after it, when merged)."""
        return self.names[: task_index + 1] if self.cfg.inference == "merged" else [self.names[task_index]]

    def train_examples(self, task_index, stream):
        return None

    def before_task(self, task_index, model) -> None:
        self.task = task_index
        base_trains = self.cfg.train_base_on_first_task and task_index == 0
        self.adapters.select(self.active(task_index), [self.names[task_index]], base_trains)

    def replay_batch(self, task_index, step, model):
        return None

    def loss_terms(self, model, task, replay):
        return {}

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
    "lora_per_task",
    LoraPerTaskConfig,
    LoraPerTask,
    "a LoRA adapter per task (stock PEFT), earlier ones frozen; routed by task token or merged",
)
