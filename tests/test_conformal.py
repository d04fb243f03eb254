"""Split-conformal calibration on synthetic data: the guarantee holds, refusals say the minimum n."""

import math

import numpy as np
import pytest

from guardrail.baselines.conformal import fit_calibrator, min_n
from guardrail.errors import ConfigError

SIGNALS = {"max_w8": "high", "min_w16": "low", "whole_nll": "both"}


def draw(rng, n):
    lens = rng.integers(5, 400, n)
    # max grows with length (as max-over-windows does); others independent of it
    return [
        {"n_scored": float(L), "max_w8": float(rng.gamma(4, 1) + 0.6 * math.log(L)),
         "min_w16": float(rng.normal(1.0, 0.3)), "whole_nll": float(rng.normal(3.0, 0.5))}
        for L in lens
    ]


@pytest.mark.parametrize("alpha", [0.01, 0.05, 0.2])
def test_flag_rate_on_exchangeable_data_is_at_most_alpha(alpha):
    rng = np.random.default_rng(42)
    cal = fit_calibrator(draw(rng, 1500), draw(rng, 1500), SIGNALS, alpha)
    test = draw(rng, 20000)
    rate = np.mean([cal.assess(f, alpha).flag for f in test])
    # marginal guarantee: E[rate] <= alpha; with 20k draws the sampling sd is <= 0.003
    assert rate <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / 20000) + 0.003
    assert rate >= alpha * 0.5  # and it is not vacuous


def test_length_buckets_follow_the_data():
    rng = np.random.default_rng(0)
    cal = fit_calibrator(draw(rng, 2000), draw(rng, 2000), SIGNALS, 0.01)
    assert len(cal.buckets) == 4
    assert cal.buckets[0].lo == 0 and cal.buckets[-1].hi is None
    for a, b in zip(cal.buckets, cal.buckets[1:], strict=False):
        assert a.hi == b.lo
    assert all(len(b.calib) >= min_n(0.01) for b in cal.buckets)


def test_both_tails_flag():
    rng = np.random.default_rng(1)
    cal = fit_calibrator(draw(rng, 1000), draw(rng, 1000), SIGNALS, 0.01)
    normal = {"n_scored": 100.0, "max_w8": 6.0, "min_w16": 1.0, "whole_nll": 3.0}
    assert not cal.assess(normal, 0.01).flag
    spike = dict(normal, max_w8=30.0)
    filler = dict(normal, min_w16=-0.5)
    low_whole = dict(normal, whole_nll=0.2)
    for f, sig in ((spike, "max_w8"), (filler, "min_w16"), (low_whole, "whole_nll")):
        a = cal.assess(f, 0.01)
        assert a.flag and a.top_signal == sig and a.p_value <= 0.01


def test_refuses_too_small_samples_with_the_minimum():
    rng = np.random.default_rng(2)
    with pytest.raises(ConfigError, match="needs at least 999"):
        fit_calibrator(draw(rng, 500), draw(rng, 500), SIGNALS, 0.001)
    cal = fit_calibrator(draw(rng, 300), draw(rng, 300), SIGNALS, 0.05)
    with pytest.raises(ConfigError, match=r"alpha=0\.001 needs at least 999"):
        cal.assess({"n_scored": 50.0, "max_w8": 5.0, "min_w16": 1.0, "whole_nll": 3.0}, 0.001)


def test_min_n():
    assert min_n(0.01) == 99 and min_n(0.05) == 19 and min_n(0.001) == 999 and min_n(0.5) == 1


def test_detector_signal_keeps_the_guarantee_and_catches_joint_outliers():
    from guardrail.baselines.detector import fit_detector

    rng = np.random.default_rng(5)

    def draw2(n):
        out = []
        for f in draw(rng, n):
            # two strongly correlated signals: each alone looks normal when they disagree
            z = rng.normal()
            f.update(max_w16=3.0 + z, min_w8=3.0 + z + rng.normal(0, 0.05))
            out.append(f)
        return out

    feats = ("max_w16", "min_w8")
    train, calib = draw2(1500), draw2(1500)
    det = fit_detector(train, features=feats)
    sig = dict(SIGNALS, detector="high")
    add = lambda fs: [{**f, "detector": det.score(f)} for f in fs]  # noqa: E731
    cal = fit_calibrator(add(train), add(calib), sig, 0.01)
    test = add(draw2(20000))
    assert np.mean([cal.assess(f, 0.01).flag for f in test]) <= 0.01 + 0.003 + 3 * math.sqrt(0.01 * 0.99 / 20000)
    odd = {"n_scored": 100.0, "max_w8": 6.0, "min_w16": 1.0, "whole_nll": 3.0, "max_w16": 4.5, "min_w8": 1.5}
    a = cal.assess({**odd, "detector": det.score(odd)}, 0.01)
    assert a.flag and a.top_signal == "detector"


def test_integer_signal_with_tied_top_values_keeps_scores_finite():
    """Regression: a discrete signal whose top reference values tie (repeat_run) underflowed p to 0."""
    rng = np.random.default_rng(3)

    def ints(n):
        return [{"n_scored": float(rng.integers(20, 200)), "repeat_run": float(rng.integers(0, 3))} for _ in range(n)]

    cal = fit_calibrator(ints(800), ints(800), {"repeat_run": "high"}, 0.01)
    far = cal.assess({"n_scored": 100.0, "repeat_run": 24.0}, 0.01)
    assert far.flag and math.isfinite(far.score) and far.signal_p["repeat_run"] > 0
    assert not cal.assess({"n_scored": 100.0, "repeat_run": 1.0}, 0.01).flag


def test_integer_signal_one_step_past_the_reference_is_not_extreme():
    """One step above tied top values of an integer signal must not read as p ~ 0 (benign false alarms)."""
    rng = np.random.default_rng(4)

    def ints(n):
        return [{"n_scored": float(rng.integers(20, 200)), "repeat_run": float(rng.choice([0, 1, 2], p=[.8, .15, .05]))}
                for _ in range(n)]

    cal = fit_calibrator(ints(800), ints(800), {"repeat_run": "high"}, 0.01)
    near = cal.assess({"n_scored": 100.0, "repeat_run": 3.0}, 0.01)
    far = cal.assess({"n_scored": 100.0, "repeat_run": 24.0}, 0.01)
    assert near.signal_p["repeat_run"] > 1e-3  # one step: unusual, not astronomically so
    assert far.signal_p["repeat_run"] < 1e-6 and far.flag


def test_texts_longer_than_any_fitting_unit_are_marked():
    rng = np.random.default_rng(5)
    train = draw(rng, 600)
    cal = fit_calibrator(train, draw(rng, 600), SIGNALS, 0.05)
    longest = max(f["n_scored"] for f in train)
    assert cal.max_len == int(longest)
    typical = {"n_scored": longest, "max_w8": 6.0, "min_w16": 1.0, "whole_nll": 3.0}
    assert not cal.assess(typical, 0.05).beyond_fitted_length
    assert cal.assess(dict(typical, n_scored=longest * 10), 0.05).beyond_fitted_length


def test_length_trend_is_robust_and_only_where_lengths_vary():
    from guardrail.baselines.conformal import length_trend

    rng = np.random.default_rng(8)
    ln = np.log(rng.integers(20, 2000, 600).astype(float))
    v = 2.0 + 0.5 * ln + rng.normal(0, 0.2, 600)
    v[:30] += 40.0  # 5 % wild values do not tilt it
    a, b = length_trend(v, ln)
    assert abs(b - 0.5) < 0.08 and abs(a - 2.0) < 0.4
    assert length_trend(v[:39], ln[:39]) is None  # too few
    assert length_trend(v, np.full(600, 4.0)) is None  # all of one length


def test_length_trend_keeps_long_texts_at_alpha_in_one_wide_bucket():
    """One bucket over 5-2000 tokens where the max signal grows with log length: without the trend the long
    texts take the flags; with it every length is flagged near alpha."""
    rng = np.random.default_rng(9)

    def texts(n, lo=5, hi=2000):
        lens = np.exp(rng.uniform(math.log(lo), math.log(hi), n))
        return [{"n_scored": float(round(L)), "max_w8": float(rng.gamma(4, 1) + 2.5 * math.log(L)),
                 "min_w16": float(rng.normal(1.0, 0.3)), "whole_nll": float(rng.normal(3.0, 0.5))} for L in lens]

    train, calib = texts(3000), texts(3000)
    long = texts(6000, 800, 2000)
    rates = {}
    for trend in (False, True):
        cal = fit_calibrator(train, calib, SIGNALS, 0.05, max_buckets=1, trend=trend)
        rates[trend] = np.mean([cal.assess(f, 0.05).flag for f in long])
    assert rates[False] > 0.12, rates
    assert 0.02 < rates[True] < 0.08, rates


def test_assessment_matrix_equals_the_scalar_tails():
    """The vectorised assessment (bucket_matrix) gives each signal the p-value tails._tails_p gives it, against
    every part, for random values (missing, far past the reference, on its ties) of every shipped baseline -- the
    same float, and the detector's score the same as Detector.score's."""
    from guardrail.baselines import registry
    from guardrail.baselines.tails import _tails_p

    rng = np.random.default_rng(11)
    for (name, side) in sorted(registry.shipped()):
        cal = registry.resolve(name, side).calibrator
        inputs = sorted(cal.inputs)
        for _ in range(40):
            b = int(rng.integers(len(cal.buckets)))
            bk = cal.buckets[b]
            f = {"n_scored": float(rng.integers(bk.lo or 1, bk.hi or 2 * (bk.lo or 1) + 60))}
            for s in inputs:
                ref = bk.reference.get(s) or [0.0, 1.0]
                v = float(rng.choice(ref))  # a reference value (a tie), moved or not
                f[s] = [v, v + rng.normal(0, 0.5), v * 30, math.nan, -v * 30][int(rng.integers(5))]
            p = cal.matrix(b).p_values(f)
            for k, part in enumerate(cal.parts):
                g = part.augment(f)
                bb = part.buckets[b]
                for j, (s, tail) in enumerate(cal.signals.items()):
                    want = _tails_p(bb.tails(s), bb.residual(s, float(g.get(s, math.nan)), f["n_scored"]), tail)
                    assert p[k, j] == want, (name, side, s, k)  # to the bit: the stored scores came from these
            scores = cal.matrix(b).combined(p)
            for k in range(len(cal.parts)):
                assert scores[k] == cal.score(f, k) if cal.bucket_of(f["n_scored"]) == b else True


def test_a_replaced_detector_is_not_served_from_the_cache():
    from guardrail.baselines import registry

    cal = registry.resolve("general", "output").calibrator.model_copy(deep=True)
    f = {"n_scored": 120.0, "max_w8": 5.0, "max_w16": 4.0, "max_w32": 3.5, "min_w8": 1.0, "min_w16": 1.5,
         "whole_nll": 2.5, "bits_per_byte": 1.0, "mean_entropy": 2.0, "distinct": 0.6, "spike_frac": 0.05,
         "excluded_frac": 0.0, "repeat_run": 2.0, "surprise_cusum": 8.0, "log_len": 4.8}
    before = cal.assess(f, 0.05).score
    det = cal.parts[1].detector
    cal.parts[1].detector = det.model_copy(update={"mean": [m + 3.0 for m in det.mean]})
    after = cal.assess(f, 0.05).score
    fresh = cal.model_copy(deep=True)
    fresh._matrices.clear()
    assert after == fresh.assess(f, 0.05).score and after != before


def test_count_table_is_exact_with_and_without_its_table():
    """#{row >= x} and #{row <= x} per row: from the pooled table, and row by row past the memory cap (a baseline
    fitted on a very large corpus) -- both equal to counting, for ties, NaN, values beyond every row, empty rows."""
    from guardrail.baselines.bucket_matrix import CountTable

    rng = np.random.default_rng(4)
    rows = [np.sort(rng.integers(0, 6, int(rng.integers(0, 30))).astype(float)) for _ in range(7)]
    big, small = CountTable(rows), CountTable(rows, max_cells=1)
    assert big.ge is not None and small.ge is None
    for _ in range(200):
        x = rng.choice([-1.0, 0.0, 2.0, 2.5, 5.0, 9.0, math.nan], size=len(rows))
        ge = np.array([(r >= v).sum() for r, v in zip(rows, x, strict=True)])
        le = np.array([(r <= v).sum() if v == v else r.size for r, v in zip(rows, x, strict=True)])
        for t in (big, small):
            assert (t.at_least(x) == ge).all() and (t.at_most(x) == le).all()
