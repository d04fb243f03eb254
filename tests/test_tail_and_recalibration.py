"""The continuous tail statistic, tier resolution checks, recalibration from recorded signal vectors, and the
leave-one-source-out helper -- on synthetic data where the truth is known."""

import itertools
import json
import math
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from guardrail.backends.base import ScorerInfo
from guardrail.baselines.conformal import continuous_p, fit_calibrator, tail_count
from guardrail.baselines.fit import cross_calibrate, rate_check
from guardrail.baselines.model import Baseline, BaselineError, load_baseline, save_baseline
from guardrail.baselines.recalibrate import SignalLog, read_signals, recalibrate
from guardrail.errors import InputError
from guardrail.evaluation.shift import SourceFeats, leave_one_source_out
from guardrail.types import LogprobMode

SIGNALS = {"max_w8": "high", "whole_nll": "both"}
DATA = Path(__file__).parent / "data"


def draw(rng, n, shift=0.0):
    lens = rng.integers(5, 200, n)
    return [{"n_scored": float(L), "max_w8": float(rng.gamma(4, 1) + 0.5 * math.log(L) + shift),
             "whole_nll": float(rng.normal(3.0 + 0.3 * shift, 0.5))} for L in lens]


def baseline_of(cal, alphas=(0.01, 0.05)) -> Baseline:
    sc = ScorerInfo(backend="synthetic", model="m", weights="w", tokenizer="t", logprob_mode=LogprobMode.RAW)
    return Baseline(domain="syn", side="prompt", scorer_id=sc.id, model="m", tokenizer="t",
                    logprob_mode=sc.logprob_mode.value, widths=[8], unit={"kind": "record"}, corpus={},
                    calibrator=cal, target_alphas=list(alphas), fit_date="2026-12-01T00:00:00Z")


def test_tail_count_is_the_count_at_calibration_scores_and_continuous_between_and_beyond():
    cal = sorted(np.random.default_rng(0).normal(size=1000).tolist())
    assert tail_count(cal, -10.0) == 1000
    assert tail_count(cal, cal[500]) == pytest.approx(500)  # n - i at the i-th score
    mid = (cal[500] + cal[501]) / 2
    assert 499 < tail_count(cal, mid) < 500  # between two scores: in between, not a tie
    top = cal[-1]
    beyond = [tail_count(cal, top + d) for d in (0.1, 0.5, 1.0, 3.0)]
    assert all(b > 0 for b in beyond) and beyond[-1] < 1  # the plain count is 0 for all of them
    assert beyond == sorted(beyond, reverse=True) and len(set(beyond)) == 4  # strictly ordered
    xs = np.linspace(-4, top + 3, 2000)
    c = [tail_count(cal, x) for x in xs]
    assert all(a >= b for a, b in itertools.pairwise(c))  # monotone, across the joint too
    arr = np.asarray(cal)
    for (x0, x1), (a, b) in zip(itertools.pairwise(xs), itertools.pairwise(c), strict=True):
        assert a - b <= ((arr >= x0) & (arr <= x1)).sum() + 1  # no jump beyond the scores it passes


def test_tail_count_interpolates_exactly_as_numpy_interp():
    """CountTail reads the interpolated count without numpy (one value per part on the request path): it must
    be numpy's np.interp to the bit -- ties among the calibration scores, values on them, below them, -inf."""
    from guardrail.baselines.tails import CountTail

    rng = np.random.default_rng(7)
    checked = 0
    for trial in range(400):
        n = int(rng.integers(1, 300))
        kind = trial % 4
        cal = np.sort([rng.normal(size=n), np.round(rng.exponential(3, size=n), 1),
                       rng.integers(0, 5, size=n).astype(float), 5 + 1e-9 * rng.normal(size=n)][kind])
        ct = CountTail(cal)
        counts = np.arange(n, 0, -1, dtype=np.float64)
        for s in [*rng.choice(cal, 10), *rng.uniform(cal[0] - 1, cal[-1] + 1, 20), cal[0], -math.inf,
                  float(np.nextafter(cal[0], -1)), float(np.nextafter(cal[-1], -math.inf))]:
            s = float(s)
            if not s <= ct.u:  # beyond u: the exponential tail, not the interpolation
                continue
            want = float(np.interp(s, cal, counts, left=float(n)))
            got = ct.count(s)
            assert got == want and math.copysign(1.0, got) == math.copysign(1.0, want), (n, kind, s, got, want)
            checked += 1
    assert checked > 5000


def test_continuous_p_meets_the_conformal_p_and_goes_below_its_floor():
    n = 99
    assert continuous_p(4.0, n) == pytest.approx(5 / 100)  # (1 + count) / (n + 1)
    assert continuous_p(1.0, n) == pytest.approx(2 / 100) and continuous_p(0.999, n) < 2 / 100
    assert continuous_p(0.25, n) == pytest.approx(0.5 / 100) and continuous_p(0.25, n) < 1 / (n + 1)
    assert continuous_p(0.0, n) > 0


def test_assessment_tail_p_ranks_below_the_resolution():
    rng = np.random.default_rng(1)
    cal = fit_calibrator(draw(rng, 800), draw(rng, 800), SIGNALS, 0.01)
    base = {"n_scored": 50.0, "max_w8": 8.0, "whole_nll": 3.0}
    far = [cal.assess(dict(base, max_w8=x), 0.01) for x in (30.0, 40.0, 60.0)]
    assert all(a.p_value == pytest.approx(a.resolution) for a in far)  # the conformal p-value ties at its floor
    tails = [a.tail_p for a in far]
    assert tails[0] > tails[1] > tails[2] and tails[0] < far[0].resolution
    typical = cal.assess(base, 0.01)
    # inside the sample it is the p-value, up to the interpolation between two calibration scores
    assert abs(typical.tail_p - typical.p_value) <= typical.resolution


def test_check_tier_refuses_below_resolution_unless_tail():
    rng = np.random.default_rng(2)
    b = baseline_of(fit_calibrator(draw(rng, 600), draw(rng, 600), SIGNALS, 0.01))
    assert 0 < b.resolution < 0.01
    b.check_tier(0.01)
    with pytest.raises(BaselineError, match="below the resolution"):
        b.check_tier(b.resolution / 2)
    b.check_tier(b.resolution / 2, tail=True)
    with pytest.raises(BaselineError, match=r"in \(0, 1\)"):
        b.check_tier(0.0)


def test_recalibration_restores_the_rate_on_shifted_traffic(tmp_path):
    rng = np.random.default_rng(3)
    train = draw(rng, 3000)
    groups = [f"g{i}" for i in range(len(train))]
    b = baseline_of(cross_calibrate(train, groups, SIGNALS, 0.01, False, None, 5))
    save_baseline(b, tmp_path / "b.json")
    b = load_baseline(tmp_path / "b.json")
    shifted = draw(rng, 6000, shift=1.5)  # a deployment whose texts are all more surprising
    record, later = shifted[:3000], shifted[3000:]
    before = np.mean([b.assess(f, 0.05).flag for f in later])
    assert before > 2 * 0.05  # the shift breaks the promise
    log = tmp_path / "signals" / "shadow.jsonl"
    with SignalLog(log) as sig:
        for f in record:
            sig.record(b, f)
    assert stat.S_IMODE(os.stat(log).st_mode) == 0o600
    line = json.loads(log.read_text().split("\n")[0])
    assert set(line) == {"baseline", "side", "features", "ts"} and line["baseline"] == b.id  # no text
    new = recalibrate(b, read_signals(log, b), source=log.name)
    save_baseline(new, tmp_path / "new.json")
    new = load_baseline(tmp_path / "new.json")
    assert new.calibrator.parts[0].buckets[0].reference == b.calibrator.parts[0].buckets[0].reference
    for alpha in (0.01, 0.05):
        after = np.mean([new.assess(f, alpha).flag for f in later])
        assert 0.5 * alpha <= after <= 2 * alpha, (alpha, after)
    assert new.corpus["recalibration"]["n_vectors"] == 3000 and new.id != b.id


def test_recalibration_refuses_foreign_and_too_few_vectors(tmp_path):
    rng = np.random.default_rng(4)
    train = draw(rng, 2000)
    b = baseline_of(cross_calibrate(train, [f"g{i}" for i in range(2000)], SIGNALS, 0.01, False, None, 5))
    other = baseline_of(fit_calibrator(draw(rng, 600), draw(rng, 600), SIGNALS, 0.01))
    log = tmp_path / "s.jsonl"
    with SignalLog(log) as sig:
        for f in draw(rng, 50):
            sig.record(other, f)
    with pytest.raises(BaselineError, match="recorded against baseline"):
        read_signals(log, b)
    with pytest.raises(InputError, match="needs at least 99 recorded texts per length bucket"):
        recalibrate(b, read_signals(log, other))
    (tmp_path / "bad.jsonl").write_text("not json\n")
    with pytest.raises(InputError, match=r"bad\.jsonl:1: not a signal record"):
        read_signals(tmp_path / "bad.jsonl", b)


def test_leave_one_source_out_finds_the_shifted_source():
    rng = np.random.default_rng(5)
    sources = {name: SourceFeats(fs, [f"{name}{i}" for i in range(len(fs))])
               for name, fs in (("a", draw(rng, 1500)), ("b", draw(rng, 1500)), ("odd", draw(rng, 1500, shift=2.0)))}

    def fit(feats, groups):
        return cross_calibrate(list(feats), list(groups), SIGNALS, 0.01, False, None, 5)

    out = leave_one_source_out(sources, fit, [0.01, 0.05])
    assert set(out["sources"]) == {"a", "b", "odd"}
    assert out["highest"]["0.05"]["source"] == "odd" and out["lowest"]["0.05"]["source"] != "odd"
    assert out["sources"]["odd"]["0.05"]["rate"] > 0.1 and not out["all_within"]
    # left out, "a" is measured against a fit that holds the shifted source: flagged less than alpha
    assert out["sources"]["a"]["0.05"]["n"] == 1500


def test_recalibration_on_signals_recorded_from_a_real_shifted_source(tmp_path):
    """Real signal vectors (the embedded model's, tests/data/signals: no text) of the broad benign corpus.  A
    prompt baseline fitted as the shipped one but without the translated Debian descriptions over-flags them
    (an English model finds other languages surprising); half of their vectors, recorded as a deployment would,
    recalibrate it, and the other half's flag rate comes back within [0.5 alpha, 2 alpha]."""
    from guardrail.baselines.splits import group_hash

    rows = [json.loads(line) for line in (DATA / "signals" / "prompt_sources.jsonl").read_text().splitlines()]
    pool = [r for r in rows if r["source"] != "debian_i18n"]
    pool = [r for src in sorted({r["source"] for r in pool})
            for r in sorted((r for r in pool if r["source"] == src), key=lambda r: group_hash(r["group"]))[:600]]
    tails = {"excess_cusum": "high", "same_run": "high"}
    b = baseline_of(cross_calibrate([r["features"] for r in pool], [r["group"] for r in pool], tails, 0.01, False,
                                    None, 5, max_buckets=1, trend=False))
    shifted = [r for r in rows if r["source"] == "debian_i18n"]
    halves = [[r["features"] for r in shifted if int(r["group"], 16) % 2 == h] for h in (0, 1)]  # by package
    for record, later in (halves, halves[::-1]):  # each half recalibrates, the other measures
        assert len(record) > 250 and len(later) > 250
        assert np.mean([b.assess(f, 0.05).flag for f in later]) > 2 * 0.05
        log = tmp_path / "shadow.jsonl"
        log.unlink(missing_ok=True)
        with SignalLog(log) as sig:
            for f in record:
                sig.record(b, f)
        new = recalibrate(b, read_signals(log, b))
        k5 = sum(new.assess(f, 0.05).flag for f in later)
        assert 0.5 * 0.05 <= k5 / len(later) <= 2 * 0.05, k5
        # ~280 texts at 1 %: ~3 flags expected, too few for a rate band; the exact binomial 99 % interval
        k1 = sum(new.assess(f, 0.01).flag for f in later)
        assert rate_check(k1, len(later), 0.01)["within"], k1


def test_missing_signals_are_listed_not_silently_typical():
    rng = np.random.default_rng(6)
    cal = fit_calibrator(draw(rng, 600), draw(rng, 600), SIGNALS, 0.01)
    a = cal.assess({"n_scored": 40.0, "max_w8": 7.0}, 0.01)  # no whole_nll (e.g. a backend without it)
    assert a.missing == ["whole_nll"] and a.signal_p["whole_nll"] == 1.0
    a = cal.assess({"n_scored": 40.0, "max_w8": float("nan"), "whole_nll": 3.0}, 0.01)
    assert a.missing == ["max_w8"]
    assert cal.assess({"n_scored": 40.0, "max_w8": 7.0, "whole_nll": 3.0}, 0.01).missing == []


def test_detector_inputs_missing_are_listed():
    from guardrail.baselines.detector import fit_detector

    rng = np.random.default_rng(8)
    benign = [dict(f, mean_entropy=float(rng.normal(3, 0.3))) for f in draw(rng, 400)]
    det = fit_detector(benign, features=("max_w8", "whole_nll", "mean_entropy"))
    cal = fit_calibrator(benign[:200], benign[200:], SIGNALS, 0.05, detector=det)
    feat = {"n_scored": 40.0, "max_w8": 7.0, "whole_nll": 3.0, "mean_entropy": float("nan")}
    assert cal.assess(feat, 0.05).missing == ["detector:mean_entropy"]
