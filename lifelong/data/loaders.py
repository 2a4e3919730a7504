"""Read examples from JSONL/JSON/CSV files, inline rows or a Hugging Face `datasets` source."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from lifelong.data.spec import DataSource
from lifelong.data.task import Example
from lifelong.errors import UserError


def load_examples(source: DataSource, kind: str, what: str) -> list[Example]:
    if source.examples is not None:
        rows = source.examples
    elif source.file is not None:
        rows = read_file(Path(source.file), what)
    else:
        rows = read_hf(source, what)
    if source.limit is not None:
        rows = rows[: source.limit]
    return [to_example(row, source, kind, f"{what} row {i}") for i, row in enumerate(rows)]


def to_example(row: dict[str, Any], source: DataSource, kind: str, what: str) -> Example:
    if kind == "prompt_target" and source.messages_field in row and source.prompt_field not in row:
        return chat_example(row[source.messages_field], f"{what} {source.messages_field!r}")
    fields = {
        "text": [source.text_field],
        "preference": [source.prompt_field, source.chosen_field, source.rejected_field],
    }.get(kind, [source.prompt_field, source.target_field])
    missing = [f for f in fields if f not in row or (kind == "preference" and row[f] is None)]
    if missing:
        raise UserError(f"{what}: no field {missing[0]!r} (fields: {', '.join(map(str, row))})")
    return Example(*(str(row[f]) for f in fields))


def chat_example(messages: Any, what: str) -> Example:
    """A row given as chat messages: the last (assistant) turn is the target, the user turn before it
    the prompt, any earlier turns (a system message, earlier exchanges) the context."""
    if not isinstance(messages, list) or not all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
        for m in messages
    ):
        raise UserError(f"{what}: must be a list of {{role, content}} messages")
    roles = [m["role"] for m in messages]
    if len(messages) < 2 or roles[-1] != "assistant" or roles[-2] != "user":
        raise UserError(f"{what}: must end with a user message and the assistant's answer (roles: {roles})")
    context = tuple((m["role"], m["content"]) for m in messages[:-2])
    return Example(messages[-2]["content"], messages[-1]["content"], context=context)


def read_file(path: Path, what: str, columns: list[str] | None = None) -> list[dict[str, Any]]:
    """The rows of a .jsonl, .json or .csv file; `columns` names the fields of a CSV without a header."""
    if not path.is_file():
        raise UserError(f"{what}: data file {str(path)!r} not found")
    suffix = path.suffix.lower()
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:  # -sig: tolerate a byte-order mark
            if suffix == ".jsonl":
                rows = [_json_line(line, n, path, what) for n, line in enumerate(f, 1) if line.strip()]
            elif suffix == ".json":
                rows = json.load(f)
            elif suffix == ".csv":
                rows = list(csv.DictReader(f, fieldnames=columns))
            else:
                raise UserError(f"{what}: {str(path)!r} is not .jsonl, .json or .csv")
    except json.JSONDecodeError as err:
        raise UserError(f"{what}: {str(path)!r} is not valid JSON: line {err.lineno}: {err.msg}") from None
    except UnicodeDecodeError:
        raise UserError(f"{what}: {str(path)!r} is not UTF-8 text") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise UserError(f"{what}: {str(path)!r} must hold a list of objects (one per example)")
    return rows


def _json_line(line: str, number: int, path: Path, what: str) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as err:
        raise UserError(f"{what}: {str(path)!r} line {number} is not valid JSON: {err.msg}") from None


def read_hf(source: DataSource, what: str) -> list[dict[str, Any]]:
    """A split from the hub (needs network access) or from a local `save_to_disk` directory."""
    return [dict(row) for row in open_hf(source, what)]


def open_hf(source: DataSource, what: str) -> Any:
    """The split as a `datasets.Dataset` (memory-mapped: rows are read only when asked for)."""
    import datasets

    try:
        if Path(source.hf).is_dir() and (Path(source.hf) / "dataset_dict.json").exists():
            data = datasets.load_from_disk(source.hf)[source.split]
        elif Path(source.hf).is_dir() and (Path(source.hf) / "dataset_info.json").exists():
            data = datasets.load_from_disk(source.hf)
        else:
            data = datasets.load_dataset(source.hf, source.hf_config, split=source.split)
    except (FileNotFoundError, ValueError, KeyError, ConnectionError, OSError) as err:
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(
            f"{what}: cannot load dataset {source.hf!r} split {source.split!r}: {detail}"
        ) from None
    return data
