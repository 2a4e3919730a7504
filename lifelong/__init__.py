"""lifelong: continual learning for language models, and the measurement of what they forget.

The names below are imported on first use (module `__getattr__`), so `import lifelong` and the light
commands (`lifelong --help`, `lifelong streams`, `lifelong configs`) do not load torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# name -> the module that defines it
_EXPORTS = {
    "Example": "lifelong.data",
    "RunConfig": "lifelong.config",
    "RunResult": "lifelong.train",
    "Stream": "lifelong.data",
    "Task": "lifelong.data",
    "build_stream": "lifelong.data",
    "load_config": "lifelong.config",
    "parse_config": "lifelong.config",
    "resume": "lifelong.train",
    "run": "lifelong.train",
    "summary": "lifelong.metrics",
    "sweep": "lifelong.sweeps",
    "toy_stream": "lifelong.data",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lifelong' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # found directly next time
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
