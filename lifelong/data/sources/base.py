"""What every source module needs: the errors for an absent or broken source, the data directory,
and the corpus registry. A leaf, so that the source modules never import their package."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from lifelong.errors import UserError


class SourceMissing(UserError):
    """A data source's package is not installed."""


class SourceBroken(UserError):
    """A data source's files are present but cannot be read (corrupt, truncated or empty)."""


def missing(what: str, install: str) -> SourceMissing:
    """The error for an absent source: `install` is the command that fixes it."""
    return SourceMissing(f"{what} is not installed: {install}")


def data_dir() -> Path:
    """Where `scripts/fetch_data.sh` puts data that has no system-wide install: `$LIFELONG_DATA`."""
    return Path(os.environ.get("LIFELONG_DATA") or Path.home() / ".cache" / "lifelong" / "data")


# name -> (loader returning the documents, one-line description)
CORPORA: dict[str, tuple[Callable[[], list[str]], str]] = {}


def register_corpus(name: str, loader: Callable[[], list[str]], description: str) -> None:
    if name in CORPORA:
        raise ValueError(f"corpus {name!r} is registered twice")
    CORPORA[name] = (loader, description)
