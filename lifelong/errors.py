"""Errors that mean "the user asked for something we cannot do": the CLI prints one line, exits 2."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class UserError(Exception):
    """A mistake in the user's config, data or command line. The message names the problem."""


class DivergenceError(RuntimeError):
    """The training loss became NaN or infinite; the task stops (the last checkpoint stays)."""


@contextmanager
def reading(path: str | Path, what: str = "file") -> Iterator[None]:
    """Turn a failure to read or decode a user's file into one UserError line naming the file."""
    try:
        yield
    except UserError:
        raise
    except UnicodeDecodeError:
        raise UserError(f"{what} {str(path)!r} is not UTF-8 text") from None
    except FileNotFoundError:
        raise UserError(f"{what} {str(path)!r} not found") from None
    except OSError as err:
        raise UserError(f"cannot read {what} {str(path)!r}: {err.strerror or err}") from None
    except ValueError as err:  # json.JSONDecodeError is a ValueError
        raise UserError(f"{what} {str(path)!r} is corrupt: {first_line(err)}") from None
    except Exception as err:
        if type(err).__name__ != "SafetensorError":  # not imported: it would load safetensors' bindings
            raise
        raise UserError(f"{what} {str(path)!r} is corrupt or truncated: {first_line(err)}") from None


def read_text(path: str | Path, what: str = "file") -> str:
    """The UTF-8 text of a user's file, or a one-line UserError naming it."""
    with reading(path, what):
        return Path(path).read_text(encoding="utf-8")


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
