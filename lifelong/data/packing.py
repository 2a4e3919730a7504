"""Text corpora as training rows: documents loaded (a registered corpus or a file), split into
training and held-out documents, tokenized and packed into rows of a fixed length, each row starting
with its source's token, and drawn in a seeded order. Used by `lifelong pretrain` (lifelong/pretrain.py).
"""

from __future__ import annotations

import json
import math
import re
from itertools import chain
from pathlib import Path

import torch
import torch.nn.functional as F

from lifelong.data.split import seeded_split
from lifelong.errors import UserError
from lifelong.seeding import generator

FILE_PREFIX = "file:"  # a corpus given as a file: .txt (documents split by blank lines) or .jsonl (`text`)


def corpus_name(spec: str) -> str:
    return Path(spec.removeprefix(FILE_PREFIX)).stem if spec.startswith(FILE_PREFIX) else spec


def check_corpus(spec: str) -> None:
    if spec.startswith(FILE_PREFIX):
        path = Path(spec.removeprefix(FILE_PREFIX))
        if path.suffix not in (".txt", ".jsonl"):
            raise ValueError(f"corpus file {str(path)!r} must be .txt or .jsonl")
        if not path.is_file():
            raise ValueError(f"corpus file {str(path)!r} not found")
        return
    from lifelong.data.sources import CORPORA

    if spec not in CORPORA:
        raise ValueError(
            f"unknown corpus {spec!r} (known: {', '.join(sorted(CORPORA)) or 'none'}; or file:PATH)"
        )


def load_documents(spec: str) -> list[str]:
    """A corpus as a list of documents, in a fixed order."""
    if not spec.startswith(FILE_PREFIX):
        from lifelong.data.sources import load_corpus

        return load_corpus(spec)
    path = Path(spec.removeprefix(FILE_PREFIX))
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".txt":
        docs = [doc.strip() for doc in re.split(r"\n\s*\n", text)]
    else:
        docs = []
        for i, line in enumerate(text.splitlines()):
            try:
                docs.append(json.loads(line)["text"] if line.strip() else "")
            except (json.JSONDecodeError, KeyError, TypeError):
                raise UserError(f"{path}: line {i + 1} is not a JSON object with a 'text' field") from None
    docs = [doc for doc in docs if doc.strip()]
    if not docs:
        raise UserError(f"corpus file {str(path)!r} holds no documents")
    return docs


def split_documents(spec: str, fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(train, held out) documents of a corpus, order kept. A registered corpus keeps its own held-out
    documents out of training (`corpus_split`: streams hold out the same ones) and is scored on a
    seeded choice of them, `fraction` of the corpus; a file has a seeded `fraction` held out. Both
    draw with torch's permutation, as they always have (lifelong/data/split.py)."""
    name = corpus_name(spec)
    key = ("pretrain-split", name)
    if not spec.startswith(FILE_PREFIX):
        from lifelong.data.sources import corpus_split

        train, held_out = corpus_split(spec)
        n_eval = max(1, min(len(held_out), round((len(train) + len(held_out)) * fraction)))
        return train, seeded_split(held_out, n_eval, seed, *key, permutation_from="torch")[1]
    docs = load_documents(spec)
    if len(docs) < 2:
        raise UserError(f"corpus {name!r} has {len(docs)} document: at least 2 are needed to hold some out")
    return seeded_split(docs, max(1, round(len(docs) * fraction)), seed, *key, permutation_from="torch")


def pack(docs: list[list[int]], source_id: int, eos_id: int, length: int, pad_id: int | None = None):
    """Rows of `length` tokens: the source token, then the next `length - 1` tokens of the documents
    joined end to end (each closed by EOS). The last partial row is dropped, or padded with `pad_id`."""
    stream = torch.tensor(list(chain.from_iterable((*doc, eos_id) for doc in docs)), dtype=torch.int32)
    window = length - 1
    n = len(stream) // window if pad_id is None else math.ceil(len(stream) / window)
    if pad_id is not None:
        stream = F.pad(stream, (0, n * window - len(stream)), value=pad_id)
    body = stream[: n * window].view(n, window)  # (N, L-1)
    return torch.cat([torch.full((n, 1), source_id, dtype=torch.int32), body], dim=1)  # (N, L)


class RowOrder:
    """The rows of each step: every row once per epoch, each epoch in its own seeded order. A function
    of the step alone, so a resumed pretraining draws the same batches."""

    def __init__(self, n_rows: int, batch_size: int, seed: int):
        self.n, self.batch_size, self.seed, self.perms = n_rows, batch_size, seed, {}

    def perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self.perms:  # keep one epoch's order
            self.perms = {epoch: torch.randperm(self.n, generator=generator(self.seed, "rows", epoch))}
        return self.perms[epoch]

    def rows(self, step: int) -> torch.Tensor:
        flat = torch.arange(step * self.batch_size, (step + 1) * self.batch_size)  # (B,)
        epochs, out = flat // self.n, torch.empty_like(flat)
        for epoch in epochs.unique().tolist():
            sel = epochs == epoch
            out[sel] = self.perm(epoch)[flat[sel] % self.n]
        return out
