"""Naive sequential fine-tuning: train on each task in turn, nothing more. The baseline that forgets."""

from __future__ import annotations

from typing import Literal

from lifelong.methods.base import Method, MethodConfig, register


class NaiveConfig(MethodConfig):
    name: Literal["naive"] = "naive"


class Naive(Method):
    """Every hook is the base's no-op."""


register("naive", NaiveConfig, Naive)
