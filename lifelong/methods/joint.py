"""Joint training: at task k, train on the union of tasks 1..k. The multitask upper bound."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Literal

from lifelong.data.batching import cat_sets
from lifelong.methods.base import Compatibility, MethodConfig, register


class JointConfig(MethodConfig):
    name: Literal["joint"] = "joint"


class Joint:
    compatibility = Compatibility()

    def __init__(self, cfg: JointConfig):
        self.cfg = cfg

    def setup(self, model, ctx):
        return model

    def train_examples(self, task_index, stream):
        return cat_sets([t.train for t in stream.tasks[: task_index + 1]], stream.pad_id)

    def before_task(self, task_index, model) -> None:
        pass

    def replay_batch(self, task_index, step, model):
        return None

    def loss_terms(self, model, task, replay):
        return {}

    def after_task(self, task_index, model) -> None:
        pass

    def route(self, task_index, model):
        return nullcontext()

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any], model) -> None:
        pass


register("joint", JointConfig, Joint, "multitask upper bound: trains on every task seen so far")
