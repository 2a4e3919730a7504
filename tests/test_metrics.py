import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lifelong.metrics import (
    METRIC_NAMES,
    average_accuracy,
    average_incremental_accuracy,
    backward_transfer,
    forgetting,
    forward_transfer,
    summary,
)

approx = pytest.approx


# ---------------------------------------------------------------- hand-computed


def test_summary_holds_each_metric_by_name_with_its_own_value():
    acc, base = [[0.9, 0.1, 0.2], [0.5, 0.8, 0.3], [0.4, 0.6, 0.7]], [0.1, 0.05, 0.2]
    out = summary(acc, base)
    assert tuple(out) == METRIC_NAMES
    assert out["AA"] == approx((0.4 + 0.6 + 0.7) / 3)
    assert out["AIA"] == approx((0.9 + (0.5 + 0.8) / 2 + (0.4 + 0.6 + 0.7) / 3) / 3)
    assert out["FGT"] == approx(((0.9 - 0.4) + (0.8 - 0.6)) / 2)
    assert out["BWT"] == approx(((0.4 - 0.9) + (0.6 - 0.8)) / 2)
    assert out["FWD"] == approx(((0.1 - 0.05) + (0.3 - 0.2)) / 2)


def test_one_task():
    acc, base = [[0.7]], [0.2]
    assert average_accuracy(acc) == approx(0.7)
    assert average_incremental_accuracy(acc) == approx(0.7)
    assert math.isnan(forgetting(acc))
    assert math.isnan(backward_transfer(acc))
    assert math.isnan(forward_transfer(acc, base))
    assert summary(acc, base) == {
        "AA": approx(0.7),
        "AIA": approx(0.7),
        "FGT": None,
        "BWT": None,
        "FWD": None,
    }


def test_k1_on_larger_matrix_reads_only_first_row():
    acc = [[0.4, 0.1], [float("nan"), float("nan")]]
    s = summary(acc, [0.0, 0.0], k=1)
    assert s == {"AA": approx(0.4), "AIA": approx(0.4), "FGT": None, "BWT": None, "FWD": None}


def test_perfect_retention():
    # upper triangle = zero-shot scores, irrelevant to retention
    acc = [
        [1.0, 0.2, 0.3],
        [1.0, 1.0, 0.1],
        [1.0, 1.0, 1.0],
    ]
    assert forgetting(acc) == approx(0.0)
    assert backward_transfer(acc) == approx(0.0)
    assert average_accuracy(acc) == approx(1.0)
    assert average_incremental_accuracy(acc) == approx(1.0)


def test_total_forgetting_3x3():
    acc = [
        [1.0, 0.0, 0.0],
        [0.0, 1.0, 0.0],
        [0.0, 0.0, 1.0],
    ]
    # FGT_3 = ((max(1, 0) - 0) + (1 - 0)) / 2 = 1
    assert forgetting(acc) == approx(1.0)
    # BWT_3 = ((0 - 1) + (0 - 1)) / 2 = -1
    assert backward_transfer(acc) == approx(-1.0)
    # AA_3 = (0 + 0 + 1) / 3
    assert average_accuracy(acc) == approx(1 / 3)
    # AIA_3 = (AA_1 + AA_2 + AA_3) / 3 = (1 + 1/2 + 1/3) / 3 = 11/18
    assert average_incremental_accuracy(acc) == approx(11 / 18)
    # at k = 2: FGT = 1 - 0, BWT = 0 - 1
    assert forgetting(acc, k=2) == approx(1.0)
    assert backward_transfer(acc, k=2) == approx(-1.0)


def test_negative_backward_transfer():
    acc = [[0.9, 0.2], [0.6, 0.8]]
    assert backward_transfer(acc) == approx(0.6 - 0.9)  # -0.3
    assert forgetting(acc) == approx(0.9 - 0.6)  # 0.3


def test_positive_backward_transfer_gives_negative_forgetting():
    acc = [[0.5, 0.2], [0.7, 0.8]]
    assert backward_transfer(acc) == approx(0.7 - 0.5)  # +0.2
    # FGT is not clipped: the old task improved, so forgetting is negative
    assert forgetting(acc) == approx(0.5 - 0.7)  # -0.2


def test_forward_transfer_positive_and_negative():
    acc = [[0.9, 0.4], [0.8, 0.9]]
    # zero-shot score on task 2 after task 1 is 0.4
    assert forward_transfer(acc, [0.1, 0.1]) == approx(0.4 - 0.1)  # +0.3
    assert forward_transfer(acc, [0.1, 0.6]) == approx(0.4 - 0.6)  # -0.2
    # baseline of task 1 is never used
    assert forward_transfer(acc, [99.0, 0.1]) == approx(0.3)


def test_worked_example_3x3():
    acc = np.array(
        [
            [0.80, 0.30, 0.20],
            [0.85, 0.90, 0.40],
            [0.70, 0.50, 0.60],
        ]
    )
    base = [0.1, 0.1, 0.3]
    # AA_1 = 0.8; AA_2 = (0.85 + 0.9) / 2 = 0.875; AA_3 = (0.7 + 0.5 + 0.6) / 3 = 0.6
    assert average_accuracy(acc, k=1) == approx(0.8)
    assert average_accuracy(acc, k=2) == approx(0.875)
    assert average_accuracy(acc) == approx(0.6)
    # AIA_3 = (0.8 + 0.875 + 0.6) / 3 = 2.275 / 3 = 0.758333...
    assert average_incremental_accuracy(acc) == approx(2.275 / 3)
    # FGT_3: task 1: max(0.8, 0.85) - 0.7 = 0.15; task 2: 0.9 - 0.5 = 0.4
    #        (0.15 + 0.4) / 2 = 0.275
    assert forgetting(acc) == approx(0.275)
    # BWT_3: task 1: 0.7 - 0.8 = -0.1; task 2: 0.5 - 0.9 = -0.4; (-0.1 - 0.4) / 2 = -0.25
    assert backward_transfer(acc) == approx(-0.25)
    # FWD_3: task 2: a[1][2] - b[2] = 0.3 - 0.1 = 0.2; task 3: a[2][3] - b[3] = 0.4 - 0.3 = 0.1
    #        (0.2 + 0.1) / 2 = 0.15
    assert forward_transfer(acc, base) == approx(0.15)
    assert summary(acc, base) == {
        "AA": approx(0.6),
        "AIA": approx(2.275 / 3),
        "FGT": approx(0.275),
        "BWT": approx(-0.25),
        "FWD": approx(0.15),
    }
    # k = 2: AIA = (0.8 + 0.875) / 2; FGT = 0.8 - 0.85 = -0.05 (task 1 improved);
    #        BWT = 0.85 - 0.8 = 0.05; FWD = 0.3 - 0.1 = 0.2
    assert summary(acc, base, k=2) == {
        "AA": approx(0.875),
        "AIA": approx(0.8375),
        "FGT": approx(-0.05),
        "BWT": approx(0.05),
        "FWD": approx(0.2),
    }


def test_unreached_rows_may_be_nan():
    nan = float("nan")
    acc = [[0.8, 0.3, nan], [0.85, 0.9, 0.4], [nan, nan, nan]]
    s = summary(acc, [0.1, 0.1, 0.3], k=2)
    assert s == {"AA": approx(0.875), "AIA": approx(0.8375), "FGT": approx(-0.05),
                 "BWT": approx(0.05), "FWD": approx(0.2)}  # fmt: skip


def test_summary_is_json_safe():
    s = summary([[0.5]], [0.0])
    assert json.loads(json.dumps(s, allow_nan=False)) == s
    assert tuple(s) == METRIC_NAMES


def test_accepts_numpy_integer_k():
    acc = [[1.0, 0.0], [0.5, 1.0]]
    assert average_accuracy(acc, k=np.int64(1)) == approx(1.0)


# ---------------------------------------------------------------- errors

SQUARE = [[1.0, 0.0], [0.5, 1.0]]
FUNCS_K = [average_accuracy, average_incremental_accuracy, forgetting, backward_transfer]


@pytest.mark.parametrize("k", [0, -1, 3, 100, 1.5, "2", True])
@pytest.mark.parametrize("fn", FUNCS_K)
def test_bad_k(fn, k):
    with pytest.raises(ValueError, match="k must"):
        fn(SQUARE, k=k)


@pytest.mark.parametrize("k", [0, 3])
def test_bad_k_with_baseline(k):
    with pytest.raises(ValueError, match="k must"):
        forward_transfer(SQUARE, [0.0, 0.0], k=k)
    with pytest.raises(ValueError, match="k must"):
        summary(SQUARE, [0.0, 0.0], k=k)


@pytest.mark.parametrize(
    "acc", [[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], [1.0, 2.0], [], [[]], np.zeros((2, 2, 2))]
)
@pytest.mark.parametrize("fn", FUNCS_K)
def test_non_square(fn, acc):
    with pytest.raises(ValueError, match="square"):
        fn(acc)


def test_non_square_with_baseline():
    with pytest.raises(ValueError, match="square"):
        forward_transfer([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], [0.0, 0.0])
    with pytest.raises(ValueError, match="square"):
        summary([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], [0.0, 0.0, 0.0])


@pytest.mark.parametrize("baseline", [[0.0], [0.0, 0.0, 0.0], [[0.0, 0.0]], 0.0])
def test_bad_baseline(baseline):
    with pytest.raises(ValueError, match="baseline"):
        forward_transfer(SQUARE, baseline)
    with pytest.raises(ValueError, match="baseline"):
        summary(SQUARE, baseline)
    # also when k == 1, where FWD is NaN anyway
    with pytest.raises(ValueError, match="baseline"):
        forward_transfer(SQUARE, baseline, k=1)


# ---------------------------------------------------------------- properties

unit = st.floats(0.0, 1.0, allow_nan=False)


@st.composite
def streams(draw):
    """(acc, baseline, k) with T in 1..6, values in [0, 1]."""
    t = draw(st.integers(1, 6))
    acc = np.array(draw(st.lists(st.lists(unit, min_size=t, max_size=t), min_size=t, max_size=t)))
    base = np.array(draw(st.lists(unit, min_size=t, max_size=t)))
    k = draw(st.integers(1, t))
    return acc, base, k


TOL = 1e-9


@given(streams())
def test_forgetting_at_least_minus_bwt(stream):
    # the max in FGT includes i = j, so each FGT term >= -(BWT term)
    acc, _, k = stream
    if k > 1:
        assert forgetting(acc, k) >= -backward_transfer(acc, k) - TOL


@given(streams())
def test_forgetting_nonnegative_when_scores_never_rise(stream):
    # FGT can be negative in general, but not if no score rises after training
    acc, _, k = stream
    acc = np.minimum.accumulate(acc, axis=0)
    if k > 1:
        assert forgetting(acc, k) >= -TOL
        assert backward_transfer(acc, k) <= TOL


@given(streams())
def test_aa_and_aia_within_range_of_entries_read(stream):
    acc, _, k = stream
    row = acc[k - 1, :k]
    assert row.min() - TOL <= average_accuracy(acc, k) <= row.max() + TOL
    lower = acc[:k, :k][np.tril_indices(k)]
    assert lower.min() - TOL <= average_incremental_accuracy(acc, k) <= lower.max() + TOL


@given(streams())
def test_no_change_after_training_means_no_forgetting(stream):
    acc, _, k = stream
    t = acc.shape[0]
    diag = np.diag(acc).copy()
    for i in range(t):
        acc[i, : i + 1] = diag[: i + 1]  # a[i][j] = a[j][j] for all i >= j
    if k > 1:
        assert forgetting(acc, k) == approx(0.0, abs=TOL)
        assert backward_transfer(acc, k) == approx(0.0, abs=TOL)


@given(streams(), st.floats(-10.0, 10.0, allow_nan=False))
def test_shift_invariance(stream, c):
    acc, base, k = stream
    before = summary(acc, base, k)
    after = summary(acc + c, base + c, k)
    for name in ("FGT", "BWT", "FWD"):
        if k == 1:
            assert before[name] is None and after[name] is None
        else:
            assert after[name] == approx(before[name], abs=1e-9)
    assert after["AA"] == approx(before["AA"] + c, abs=1e-9)
    assert after["AIA"] == approx(before["AIA"] + c, abs=1e-9)


@given(streams())
def test_only_entries_read_matter(stream):
    # AA, AIA, FGT, BWT read only the lower triangle of rows < k;
    # FWD additionally reads the first superdiagonal of rows < k - 1
    acc, base, k = stream
    t = acc.shape[0]
    masked = np.full_like(acc, np.nan)
    for i in range(k):
        masked[i, : i + 1] = acc[i, : i + 1]
        if i + 1 < k:
            masked[i, i + 1] = acc[i, i + 1]
    base_masked = base.copy()
    base_masked[0] = np.nan  # b[0] is never used
    assert summary(masked, base_masked, k) == summary(acc, base, k)
    assert masked.shape == (t, t)


@given(streams())
def test_summary_matches_functions_and_none_iff_k1(stream):
    acc, base, k = stream
    s = summary(acc.tolist(), base.tolist(), k)
    assert tuple(s) == METRIC_NAMES
    assert s["AA"] == average_accuracy(acc, k)
    assert s["AIA"] == average_incremental_accuracy(acc, k)
    for name, fn in (("FGT", forgetting), ("BWT", backward_transfer)):
        assert (s[name] is None) == (k == 1)
        if k > 1:
            assert s[name] == fn(acc, k)
    assert (s["FWD"] is None) == (k == 1)
    if k > 1:
        assert s["FWD"] == forward_transfer(acc, base, k)


@given(streams())
def test_default_k_is_number_of_rows(stream):
    acc, base, _ = stream
    assert summary(acc, base) == summary(acc, base, acc.shape[0])


def test_scores_at_target_interpolates_at_the_crossing():
    from lifelong.report import scores_at_target

    evals = [
        {"global_step": 0, "task": -1, "scores": [-5.0, -9.0]},
        {"global_step": 100, "task": 0, "scores": [-3.0, -8.0]},
        {"global_step": 200, "task": 0, "scores": [-2.0, -8.0]},  # end of task 0
        {"global_step": 300, "task": 1, "scores": [-2.5, -6.0]},
        {"global_step": 400, "task": 1, "scores": [-3.0, -4.0]},
    ]
    at = scores_at_target(evals, task=1, target=-5.0)  # halfway between steps 300 and 400
    assert at["global_step"] == 350 and at["scores"] == [-2.75, -5.0]
    assert scores_at_target(evals, task=1, target=-3.0) is None  # never reached
    assert scores_at_target(evals, task=1, target=-8.5)["global_step"] == 200  # reached at the start
    assert scores_at_target(evals, task=0, target=-4.0)["scores"] == [-4.0, -8.5]
