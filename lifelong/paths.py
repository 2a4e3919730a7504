"""Telling a mistyped local model path from a hub id, without importing transformers (so a config
validator can refuse it before any model library loads)."""

from __future__ import annotations

from pathlib import Path


def looks_local(path: str) -> bool:
    """A model path meant as a directory rather than a hub id (`name` or `org/name`): it starts with
    `.`, `/` or `~`, has more than one `/`, or its first part exists here (`models/my-llama`)."""
    parts = path.split("/")
    return path.startswith((".", "/", "~")) or len(parts) > 2 or (len(parts) > 1 and Path(parts[0]).exists())


def missing_model_path(path: str) -> str | None:
    """Why `path` cannot be a model (a local-looking path that does not exist), or None."""
    if looks_local(path) and not Path(path).expanduser().exists():
        return f"model path {path!r} does not exist (a hub id is written org/name)"
    return None
