"""Continual-learning methods: one file each, listed in `registry.METHODS` and imported on first use.
A run composes a list of them."""

from lifelong.methods.registry import (
    METHODS,
    Compatibility,
    MethodConfig,
    call_order,
    check_compatible,
    check_distributed,
    method_entry,
    method_labels,
    method_names,
    method_summaries,
    register,
    registered,
)


def __getattr__(name: str):
    """The names that need torch (`Method`, `Forward`, ...), imported on first use."""
    if name in {"Method", "Forward", "MethodContext", "build_method", "route_methods", "context_methods"}:
        from lifelong.methods import base

        return getattr(base, name)
    raise AttributeError(f"module 'lifelong.methods' has no attribute {name!r}")


__all__ = [
    "METHODS",
    "Compatibility",
    "Forward",
    "Method",
    "MethodConfig",
    "MethodContext",
    "build_method",
    "call_order",
    "check_compatible",
    "check_distributed",
    "context_methods",
    "method_entry",
    "method_labels",
    "method_names",
    "method_summaries",
    "register",
    "registered",
    "route_methods",
]
