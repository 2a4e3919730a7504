"""Continual-learning methods: one file each, registered by name. A run composes a list of them."""

from lifelong.methods import joint, naive, replay, self_replay  # noqa: F401  (registration)
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
]
