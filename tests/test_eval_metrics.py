"""guardrail.evaluation.metrics: against sklearn, hand-computed examples, threshold semantics, bootstrap."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from guardrail.evaluation.metrics import (
    auprc,
    auroc,
    bootstrap_ci,
    reliability,
    roc_curve,
    summary,
    threshold_at_fpr,
    tpr_at_fpr,
)


def _tied_data(seed: int, n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """Random labels with scores rounded to one decimal: many ties, within and across classes."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    scores = np.round(rng.normal(size=n) + 0.8 * labels, 1)
    return scores, labels


# --- auroc / auprc -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(8))
def test_auroc_auprc_match_sklearn_with_ties(seed: int) -> None:
    scores, labels = _tied_data(seed)
    assert len(np.unique(scores)) < len(scores) / 2  # really tied
    assert auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert auprc(scores, labels) == pytest.approx(average_precision_score(labels, scores), abs=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_auprc_matches_sklearn_coarse_ties_and_imbalance(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    labels = (rng.random(1000) < 0.05).astype(int)
    scores = rng.integers(0, 5, 1000) + labels  # five-ish distinct values
    assert auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert auprc(scores, labels) == pytest.approx(average_precision_score(labels, scores), abs=1e-12)


def test_auroc_hand_computed() -> None:
    # pos {3, 2}, neg {2, 1}: pairs (3,2)=1 (3,1)=1 (2,2)=1/2 (2,1)=1 -> 3.5 / 4
    assert auroc([3, 2, 2, 1], [1, 1, 0, 0]) == pytest.approx(0.875)
    assert auroc([1, 2, 3, 4], [0, 0, 1, 1]) == 1.0
    assert auroc([1, 2, 3, 4], [1, 1, 0, 0]) == 0.0
    assert auroc([5, 5, 5, 5], [1, 0, 1, 0]) == 0.5
    # sequences and bool labels are accepted
    assert auroc((0.1, 0.9), (False, True)) == 1.0


def test_auprc_hand_computed() -> None:
    # descending: 4(+) 3(-) 2(+) 1(-): AP = 1/2 * 1 + 1/2 * 2/3
    assert auprc([4, 3, 2, 1], [1, 0, 1, 0]) == pytest.approx(0.5 + 1 / 3)
    # all tied: a single threshold, AP = prevalence
    assert auprc([1, 1, 1, 1], [1, 0, 0, 0]) == pytest.approx(0.25)
    assert auprc([2, 1], [1, 0]) == 1.0


def test_one_class_raises() -> None:
    with pytest.raises(ValueError, match="both classes"):
        auroc([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="both classes"):
        auroc([0.1, 0.2], [0, 0])
    with pytest.raises(ValueError, match="positive"):
        auprc([0.1, 0.2], [0, 0])
    with pytest.raises(ValueError, match="both classes"):
        tpr_at_fpr([0.1, 0.2], [1, 1], 0.01)
    with pytest.raises(ValueError, match="both classes"):
        roc_curve([0.1, 0.2], [0, 0])
    with pytest.raises(ValueError, match="both classes"):
        summary([0.1, 0.2], [1, 1], n_boot=10)


def test_nan_raises() -> None:
    scores = [0.1, float("nan"), 0.3, 0.4]
    labels = [0, 1, 0, 1]
    for fn in (auroc, auprc, roc_curve, summary):
        with pytest.raises(ValueError, match="NaN"):
            fn(scores, labels)
    with pytest.raises(ValueError, match="NaN"):
        tpr_at_fpr(scores, labels, 0.1)
    with pytest.raises(ValueError, match="NaN"):
        threshold_at_fpr([0.1, float("nan")], 0.1)


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="shape"):
        auroc([0.1, 0.2, 0.3], [0, 1])
    with pytest.raises(ValueError, match="labels"):
        auroc([0.1, 0.2], [0, 2])
    with pytest.raises(ValueError, match="empty"):
        auroc([], [])
    with pytest.raises(ValueError, match="fpr"):
        threshold_at_fpr([0.1, 0.2], 1.5)


# --- thresholds ---------------------------------------------------------------------------------------------


def test_threshold_allows_exactly_floor_fpr_n_false_alarms() -> None:
    neg = np.arange(1000, dtype=float)  # 0 .. 999
    # 1000 * 0.001 = 1 false alarm allowed: t = second largest, only 999 is flagged
    t = threshold_at_fpr(neg, 0.001)
    assert t == 998.0
    assert np.mean(neg > t) == pytest.approx(0.001)
    assert threshold_at_fpr(neg, 0.01) == 989.0  # 10 allowed
    assert threshold_at_fpr(neg, 0.0) == 999.0  # none allowed: the max, flagged nobody
    assert np.mean(neg > threshold_at_fpr(neg, 0.0)) == 0.0
    # just below the bound: 0 false alarms allowed
    assert threshold_at_fpr(neg, 0.000999) == 999.0
    # 999 negatives at 0.001: floor(0.999) = 0
    assert threshold_at_fpr(neg[:999], 0.001) == 998.0
    assert np.mean(neg[:999] > 998.0) == 0.0


def test_threshold_float_error_does_not_lose_a_false_alarm() -> None:
    # 0.29 * 100 == 28.999999999999996 in floating point; 29 false alarms are allowed
    neg = np.arange(100, dtype=float)
    t = threshold_at_fpr(neg, 0.29)
    assert np.sum(neg > t) == 29


def test_threshold_all_flagged_is_minus_inf() -> None:
    assert threshold_at_fpr([1.0, 2.0], 1.0) == -math.inf
    assert threshold_at_fpr([1.0, 2.0], 0.5) == 1.0  # one allowed: t = second largest


def test_threshold_ties_keep_fpr_under_target() -> None:
    # 10 negatives, top three tied at 5: fpr 0.1 allows 1 false alarm, t = 5, nothing above it is flagged
    neg = np.array([5, 5, 5, 4, 3, 2, 1, 0, 0, 0], dtype=float)
    t = threshold_at_fpr(neg, 0.1)
    assert t == 5.0
    assert np.mean(neg > t) == 0.0
    t3 = threshold_at_fpr(neg, 0.3)  # 3 allowed: t = 4, the three 5s flagged
    assert t3 == 4.0
    assert np.mean(neg > t3) == pytest.approx(0.3)


@pytest.mark.parametrize("seed", range(5))
def test_realised_fpr_never_exceeds_target(seed: int) -> None:
    rng = np.random.default_rng(seed)
    neg = np.round(rng.normal(size=777), 1)
    for fpr in (0.0, 0.001, 0.01, 0.05, 0.1, 0.5, 0.99):
        t = threshold_at_fpr(neg, fpr)
        assert np.mean(neg > t) <= fpr
        # smallest such t: any lower threshold at a negative score would exceed the budget
        lower = neg[neg < t]
        if lower.size:
            assert np.mean(neg > lower.max()) > fpr


def test_tpr_at_fpr_semantics() -> None:
    neg = np.arange(1000, dtype=float)
    pos = np.array([998.0, 998.5, 999.0, 1000.0, 10.0])
    scores = np.r_[pos, neg]
    labels = np.r_[np.ones(pos.size), np.zeros(neg.size)]
    # t = 998: strict >, so the positive tied at 998 is missed
    assert tpr_at_fpr(scores, labels, 0.001) == pytest.approx(3 / 5)
    # t = 999: only 1000 passes
    assert tpr_at_fpr(scores, labels, 0.0) == pytest.approx(1 / 5)
    # everything flagged
    assert tpr_at_fpr(scores, labels, 1.0) == 1.0


# --- roc curve ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_roc_curve_endpoints_monotone_and_matches_sklearn(seed: int) -> None:
    scores, labels = _tied_data(seed, 300)
    fpr, tpr = roc_curve(scores, labels)
    assert (fpr[0], tpr[0]) == (0.0, 0.0)
    assert (fpr[-1], tpr[-1]) == (1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert len(fpr) == len(np.unique(scores)) + 1  # one point per distinct threshold
    sk_fpr, sk_tpr, _ = sk_roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    # trapezoidal area equals the Mann-Whitney AUROC
    assert np.trapezoid(tpr, fpr) == pytest.approx(auroc(scores, labels), abs=1e-12)


# --- bootstrap ----------------------------------------------------------------------------------------------


def test_bootstrap_ci_contains_estimate_and_is_deterministic() -> None:
    scores, labels = _tied_data(0, 500)
    ci = bootstrap_ci(auroc, scores, labels, n_boot=300, seed=7)
    assert ci[0] <= auroc(scores, labels) <= ci[1]
    assert ci[0] < ci[1]
    assert bootstrap_ci(auroc, scores, labels, n_boot=300, seed=7) == ci
    assert bootstrap_ci(auroc, scores, labels, n_boot=300, seed=8) != ci
    ap = bootstrap_ci(auprc, scores, labels, n_boot=300, seed=7)
    assert ap[0] <= auprc(scores, labels) <= ap[1]


def test_bootstrap_ci_is_stratified() -> None:
    scores, labels = _tied_data(1, 200)
    n_pos = int(labels.sum())
    seen: list[tuple[int, int]] = []

    def count(s: np.ndarray, y: np.ndarray) -> float:
        seen.append((int(y.sum()), int((y == 0).sum())))
        return float(s.mean())

    bootstrap_ci(count, scores, labels, n_boot=50)
    assert set(seen) == {(n_pos, len(labels) - n_pos)}


def test_bootstrap_ci_narrower_with_more_data() -> None:
    small = _tied_data(2, 200)
    large = _tied_data(2, 5000)
    lo_s, hi_s = bootstrap_ci(auroc, *small, n_boot=300)
    lo_l, hi_l = bootstrap_ci(auroc, *large, n_boot=300)
    assert hi_l - lo_l < 0.5 * (hi_s - lo_s)


def test_bootstrap_level() -> None:
    scores, labels = _tied_data(3, 300)
    lo90, hi90 = bootstrap_ci(auroc, scores, labels, n_boot=300, level=0.9)
    lo99, hi99 = bootstrap_ci(auroc, scores, labels, n_boot=300, level=0.99)
    assert lo99 <= lo90 < hi90 <= hi99
    with pytest.raises(ValueError, match="level"):
        bootstrap_ci(auroc, scores, labels, n_boot=10, level=1.0)


# --- summary ------------------------------------------------------------------------------------------------


def test_summary_shape_values_and_json() -> None:
    rng = np.random.default_rng(5)
    labels = (rng.random(3000) < 0.3).astype(int)
    scores = rng.normal(size=3000) + 1.5 * labels
    out = summary(scores, labels, n_boot=200, seed=1)
    assert set(out) == {
        "auroc",
        "auroc_ci",
        "auprc",
        "auprc_ci",
        "tpr_at_fpr",
        "tpr_at_fpr_ci",
        "threshold_at_fpr",
        "n_pos",
        "n_neg",
    }
    keys = {"0.001", "0.01", "0.05"}
    assert set(out["tpr_at_fpr"]) == set(out["tpr_at_fpr_ci"]) == set(out["threshold_at_fpr"]) == keys
    assert out["n_pos"] == labels.sum() and out["n_neg"] == (labels == 0).sum()
    assert isinstance(out["n_pos"], int) and isinstance(out["auroc"], float)
    assert out["auroc"] == round(auroc(scores, labels), 6)
    assert out["auprc"] == round(auprc(scores, labels), 6)
    neg = scores[labels == 0]
    for f in (0.001, 0.01, 0.05):
        k = format(f, "g")
        assert out["tpr_at_fpr"][k] == round(tpr_at_fpr(scores, labels, f), 6)
        assert out["threshold_at_fpr"][k] == round(threshold_at_fpr(neg, f), 6)
        lo, hi = out["tpr_at_fpr_ci"][k]
        assert lo <= out["tpr_at_fpr"][k] <= hi
    lo, hi = out["auroc_ci"]
    assert lo <= out["auroc"] <= hi
    lo, hi = out["auprc_ci"]
    assert lo <= out["auprc"] <= hi
    # the auroc interval is the one bootstrap_ci gives for the same seed and replicate count
    assert out["auroc_ci"] == [round(v, 6) for v in bootstrap_ci(auroc, scores, labels, n_boot=200, seed=1)]
    assert summary(scores, labels, n_boot=200, seed=1) == out
    json.dumps(out, allow_nan=False)


def test_summary_minus_inf_threshold_is_none() -> None:
    # 10 negatives: fpr 0.001 allows 0 false alarms, fpr 1.0 allows all 10 -> -inf -> None
    scores = np.r_[np.arange(10.0), [20.0, 30.0]]
    labels = np.r_[np.zeros(10), np.ones(2)]
    out = summary(scores, labels, fprs=(0.001, 1.0), n_boot=20)
    assert out["threshold_at_fpr"] == {"0.001": 9.0, "1": None}
    assert out["tpr_at_fpr"] == {"0.001": 1.0, "1": 1.0}
    json.dumps(out, allow_nan=False)


# --- reliability --------------------------------------------------------------------------------------------


def test_reliability_known_ece() -> None:
    # bin [0.1, 0.2): four at 0.15, one positive -> frac 0.25, gap 0.10
    # bin [0.8, 0.9): six at 0.85, three positive -> frac 0.5, gap 0.35
    probs = [0.15, 0.15, 0.15, 0.15, 0.85, 0.85, 0.85, 0.85, 0.85, 0.85]
    labels = [1, 0, 0, 0, 1, 1, 1, 0, 0, 0]
    rel = reliability(probs, labels, n_bins=10)
    assert rel["ece"] == pytest.approx(0.4 * 0.10 + 0.6 * 0.35)
    assert len(rel["bins"]) == 10
    b1, b8 = rel["bins"][1], rel["bins"][8]
    assert b1["lo"] == pytest.approx(0.1) and b1["hi"] == pytest.approx(0.2)
    assert (b1["n"], b1["mean_prob"], b1["frac_pos"]) == (4, pytest.approx(0.15), 0.25)
    assert (b8["n"], b8["mean_prob"], b8["frac_pos"]) == (6, pytest.approx(0.85), 0.5)
    assert rel["bins"][0] == {"lo": 0.0, "hi": pytest.approx(0.1), "n": 0, "mean_prob": None, "frac_pos": None}
    assert sum(b["n"] for b in rel["bins"]) == 10
    json.dumps(rel, allow_nan=False)


def test_reliability_edges_and_perfect_calibration() -> None:
    rel = reliability([0.0, 1.0, 0.5], [0, 1, 1], n_bins=2)
    # 0 in the first bin, 0.5 and 1.0 in the last (closed) bin
    assert [b["n"] for b in rel["bins"]] == [1, 2]
    assert rel["ece"] == pytest.approx(2 / 3 * abs(1.0 - 0.75))
    rel = reliability([0.0, 0.0, 1.0], [0, 0, 1], n_bins=5)
    assert rel["ece"] == 0.0


def test_reliability_out_of_range_raises() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        reliability([0.5, 1.2], [0, 1])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        reliability([-0.1, 0.5], [0, 1])
    with pytest.raises(ValueError, match="NaN"):
        reliability([float("nan"), 0.5], [0, 1])
