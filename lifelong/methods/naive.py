"""Naive sequential fine-tuning: train on each task in turn, nothing more. The baseline that forgets."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Literal

from lifelong.methods.base import Compatibility, MethodConfig, register


class NaiveConfig(MethodConfig):
    name: Literal["naive"] = "naive"


class Naive:
    compatibility = Compatibility()

    def __init__(self, cfg: NaiveConfig):
        self.cfg = cfg

    def setup(self, model, ctx):
        return model

    def train_examples(self, task_index, stream):
        return None

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


register("naive", NaiveConfig, Naive, "sequential fine-tuning (the baseline)")
