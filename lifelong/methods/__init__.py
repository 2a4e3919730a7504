"""Continual-learning methods: one file each, registered by name. A run composes a list of them."""

from lifelong.methods import (  # noqa: F401  (registration)
    adapters,
    ewc,
    expand,
    feature_reg,
    joint,
    l2,
    lamol,
    lora,
    lora_per_task,
    lwf,
    mole,
    naive,
    olora,
    prefix_tuning,
    prompt_tuning,
    replay,
    self_replay,
)
from lifelong.methods.base import (
    Compatibility,
    Forward,
    Method,
    MethodConfig,
    MethodContext,
    build_method,
    method_entry,
    register,
    registered,
    route_methods,
)

__all__ = [
    "Compatibility",
    "Forward",
    "Method",
    "MethodConfig",
    "MethodContext",
    "build_method",
    "method_entry",
    "register",
    "registered",
    "route_methods",
]
