"""The one seeded train/held-out split: user files, corpora and the scenarios all hold out the first
`n_eval` items of a permutation seeded by `derive_seed(seed, *parts)`.

The options are what the callers have always differed in, so that each keeps the exact split it had:
user files and corpora keep their items' order on both sides (`keep_order`), the scenarios keep the
shuffled order; corpora for `lifelong pretrain` draw the permutation with torch, the rest with Python's
`random` (`permutation`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Literal, TypeVar

from lifelong.seeding import derive_seed

T = TypeVar("T")


def permutation(n: int, seed: int, source: Literal["python", "torch"] = "python") -> list[int]:
    """A seeded permutation of range(n), the same in every process."""
    if source == "torch":
        import torch

        return torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return order


def seeded_split(
    items: Sequence[T],
    n_eval: int,
    seed: int,
    *parts: object,
    keep_order: bool = True,
    permutation_from: Literal["python", "torch"] = "python",
) -> tuple[list[T], list[T]]:
    """(train, held out): the first `n_eval` items of the permutation seeded by (seed, *parts) held out,
    the rest trained on; no item is on both sides."""
    order = permutation(len(items), derive_seed(seed, *parts), permutation_from)
    if not keep_order:
        return [items[i] for i in order[n_eval:]], [items[i] for i in order[:n_eval]]
    held = set(order[:n_eval])
    return [x for i, x in enumerate(items) if i not in held], [x for i, x in enumerate(items) if i in held]
