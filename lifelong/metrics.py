"""Continual-learning metrics over the accuracy matrix of a stream of T tasks.

All functions are pure (no I/O). Conventions:

- ``acc`` has shape (T, T); ``acc[i][j]`` is the score on task j (0-based) after
  training on tasks 0..i. Scores are "higher is better" (losses are stored negated).
  Entries above the diagonal are zero-shot scores on tasks not trained yet; only the
  first superdiagonal ``acc[j-1][j]`` is read (by forward transfer).
- ``baseline`` has shape (T,): ``baseline[j]`` is the score of the initial model,
  before any training on the stream, on task j.
- ``k`` is the number of tasks seen so far, 1-based, ``1 <= k <= T``; ``None`` means T.
  Only rows ``< k`` (0-based) are read, so rows not reached yet may be NaN.

Formulas, 1-based (a = acc, b = baseline):

- AA_k  = 1/k     * sum_{j=1..k} a[k][j]
- AIA_k = 1/k     * sum_{i=1..k} AA_i
- FGT_k = 1/(k-1) * sum_{j=1..k-1} max_{i=j..k-1} (a[i][j] - a[k][j])
- BWT_k = 1/(k-1) * sum_{j=1..k-1} (a[k][j] - a[j][j])
- FWD_k = 1/(k-1) * sum_{j=2..k} (a[j-1][j] - b[j])

Kept columns (sets evaluated after every task but never trained, e.g. `keep: general`) sit to
the right of the square part; the five metrics read only the square part. Of a kept column c, with
b[c] the initial model's score and a[k][c] the score after task k:

- drop[c]     = b[c] - a[T][c]                 (what the stream cost; > 0 = forgot, < 0 = gained)
- max_drop[c] = max_{k=1..T} (b[c] - a[k][c])  (the worst moment along the stream)
- mean_drop = mean_c drop[c], worst_drop = max_c drop[c]

In FGT the max runs over rows from the one where task j was trained (i = j) up to
k-1, never over zero-shot rows i < j. FGT is not clipped at 0: it is negative when
every old task ended above its best earlier score. Since i = j is in the max,
FGT_k >= -BWT_k always. For k == 1, FGT, BWT and FWD are undefined and return NaN.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence

import numpy as np

METRIC_NAMES = ("AA", "AIA", "FGT", "BWT", "FWD")

ArrayLike = Sequence[Sequence[float]] | np.ndarray


def _matrix(acc: ArrayLike) -> np.ndarray:
    a = np.asarray(acc, dtype=float)
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] == 0:
        raise ValueError(f"acc must be a non-empty square (T, T) matrix, got shape {a.shape}")
    return a


def _k(a: np.ndarray, k: int | None) -> int:
    t = a.shape[0]
    if k is None:
        return t
    if isinstance(k, bool):
        raise ValueError(f"k must be an integer in 1..{t}, got {k!r}")
    try:
        k = operator.index(k)
    except TypeError:
        raise ValueError(f"k must be an integer in 1..{t}, got {k!r}") from None
    if not 1 <= k <= t:
        raise ValueError(f"k must be in 1..{t} (number of tasks seen), got {k}")
    return k


def _baseline(baseline: Sequence[float] | np.ndarray, t: int) -> np.ndarray:
    b = np.asarray(baseline, dtype=float)
    if b.shape != (t,):
        raise ValueError(f"baseline must have shape ({t},) to match acc, got {b.shape}")
    return b


def average_accuracy(acc: ArrayLike, k: int | None = None) -> float:
    """AA_k: mean score over tasks 1..k after training on task k."""
    a = _matrix(acc)
    k = _k(a, k)
    return float(np.mean(a[k - 1, :k]))


def average_incremental_accuracy(acc: ArrayLike, k: int | None = None) -> float:
    """AIA_k: mean of AA_1, ..., AA_k."""
    a = _matrix(acc)
    k = _k(a, k)
    return float(np.mean([np.mean(a[i, : i + 1]) for i in range(k)]))


def forgetting(acc: ArrayLike, k: int | None = None) -> float:
    """FGT_k: mean over old tasks j of (best score since training j) - (score now).

    The max runs over rows j..k-1 (1-based), i.e. from the row where task j was
    trained up to the previous row. NaN if k == 1.
    """
    a = _matrix(acc)
    k = _k(a, k)
    if k == 1:
        return math.nan
    last = a[k - 1]
    drops = [np.max(a[j : k - 1, j]) - last[j] for j in range(k - 1)]
    return float(np.mean(drops))


def backward_transfer(acc: ArrayLike, k: int | None = None) -> float:
    """BWT_k: mean over old tasks of (score now) - (score right after training it).

    Negative means forgetting. NaN if k == 1.
    """
    a = _matrix(acc)
    k = _k(a, k)
    if k == 1:
        return math.nan
    j = np.arange(k - 1)
    return float(np.mean(a[k - 1, j] - a[j, j]))


def forward_transfer(acc: ArrayLike, baseline: Sequence[float] | np.ndarray, k: int | None = None) -> float:
    """FWD_k: mean over tasks 2..k of (zero-shot score before training it) - baseline.

    The zero-shot score of task j is acc[j-1][j] (0-based), measured after training
    on tasks 0..j-1; the baseline is the initial model's score. NaN if k == 1.
    """
    a = _matrix(acc)
    b = _baseline(baseline, a.shape[0])
    k = _k(a, k)
    if k == 1:
        return math.nan
    j = np.arange(1, k)
    return float(np.mean(a[j - 1, j] - b[j]))


def summary(
    acc: ArrayLike, baseline: Sequence[float] | np.ndarray, k: int | None = None
) -> dict[str, float | None]:
    """All five metrics keyed by METRIC_NAMES. A metric undefined at k (forgetting, backward and
    forward transfer of one task) is None; one computed from a NaN score (a diverged evaluation)
    stays NaN, so the two are never confused."""
    k_seen = _k(np.asarray(acc, dtype=float), k) if len(acc) else 0
    values = {
        "AA": average_accuracy(acc, k),
        "AIA": average_incremental_accuracy(acc, k),
        "FGT": forgetting(acc, k),
        "BWT": backward_transfer(acc, k),
        "FWD": forward_transfer(acc, baseline, k),
    }
    undefined = {"FGT", "BWT", "FWD"} if k_seen <= 1 else set()
    return {name: (None if name in undefined else v) for name, v in values.items()}


def kept_drops(baseline: Sequence[float] | np.ndarray, rows: ArrayLike) -> dict[str, list[float] | float]:
    """Drops of the kept columns from the initial model's scores `baseline` (K,) over `rows` (R, K),
    the kept part of the matrix rows after each task: `drop` (to the last row) and `max_drop` (to the
    worst row) per column, their `mean_drop` and `worst_drop` (of `drop`). Higher-is-better scores, so
    a positive drop is lost ability; a NaN score (a diverged evaluation) stays NaN."""
    a = np.asarray(rows, dtype=float)
    b = np.asarray(baseline, dtype=float)
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0 or b.shape != (a.shape[1],):
        raise ValueError(f"rows must be (R, K) with R, K >= 1 and baseline (K,), got {a.shape} and {b.shape}")
    lost = b[None, :] - a  # (R, K)
    drop = lost[-1]  # (K,)
    return {
        "drop": drop.tolist(),
        "max_drop": lost.max(axis=0).tolist(),  # NaN if any row of the column is NaN
        "mean_drop": float(np.mean(drop)),
        "worst_drop": float(np.max(drop)),
    }
