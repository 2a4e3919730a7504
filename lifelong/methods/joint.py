"""Joint training: at task k, train on the union of tasks 1..k. The multitask upper bound.

With `balanced: true` (the default) every task seen so far fills an equal share of the batches: the
rows of smaller tasks are repeated up to the largest task's count (in the toy stream, 100 reversal
rows next to 9,744 addition rows would otherwise be 1% of each batch). `balanced: false` draws
uniformly from the union, so tasks are seen in proportion to their size.
"""

from __future__ import annotations

from typing import Literal

import torch

from lifelong.data.batching import EncodedSet, cat_sets
from lifelong.methods.base import Compatibility, Method, MethodConfig, register


class JointConfig(MethodConfig):
    name: Literal["joint"] = "joint"
    balanced: bool = True  # an equal share of every batch per task (small tasks' rows repeated)


class Joint(Method):
    compatibility = Compatibility(supplies_examples=True)

    def train_examples(self, task_index, stream):
        sets = [t.train for t in stream.tasks[: task_index + 1]]
        if self.cfg.balanced:
            largest = max(len(s) for s in sets)
            sets = [repeated(s, largest) for s in sets]
        return cat_sets(sets, stream.pad_id)


def repeated(rows: EncodedSet, n: int) -> EncodedSet:
    """The examples repeated in order to `n` examples (cut in the last round); a pair's two rows stay
    together."""
    idx = torch.arange(n) % len(rows)  # (n,)
    if rows.pairs:
        idx = torch.stack([2 * idx, 2 * idx + 1], dim=1).flatten()  # (2n,): chosen, rejected, ...
    holes = None if rows.holes is None else rows.holes[idx]  # (n, 2): a tool row's result stays a hole
    return EncodedSet(
        rows.ids[idx], rows.lengths[idx], rows.target_start[idx], rows.prefix_len, rows.pairs, holes=holes
    )


register("joint", JointConfig, Joint)
