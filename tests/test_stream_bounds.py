"""The streaming abort's precomputed signal thresholds (guardrail.baselines.stream_bounds): a checkpoint they clear
cannot abort -- its full assessment gives a tail statistic above the cut-off -- on the shipped own-generation
baselines (cross-conformal, robust-covariance detectors with a singular precision matrix) and on synthetic ones
with length buckets, length trends and a logistic detector, over normal, degenerate and looping streams; the
assessor decides exactly as the full assessment at every checkpoint; the stacked detector scores equal each
part's own."""

from __future__ import annotations

import math

import numpy as np
import pytest

from guardrail.backends.base import LogprobMode, ScorerInfo
from guardrail.baselines.features import features
from guardrail.baselines.fit import DEFAULT_WIDTHS, fit_from_features
from guardrail.baselines.registry import regimes
from guardrail.baselines.stream_bounds import StreamBounds, _DetectorBank, stream_bounds
from guardrail.baselines.stream_state import StreamState
from guardrail.guard.policy import StreamRules
from guardrail.guard.stream_assess import StreamAssessor
from guardrail.types import Segment, Side, Token

SCORER = ScorerInfo(backend="synthetic", model="synthetic", weights="none", tokenizer="words",
                    logprob_mode=LogprobMode.RAW)


def stream(seed: int, n: int, kind: str = "normal") -> list[Token]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        w = f" w{int(rng.integers(0, 400))}".encode()
        lp = -float(rng.gamma(1.3, 0.8))
        if kind == "salad" and i >= n // 2:
            lp = -float(rng.uniform(6, 11))
        out.append(Token(w.decode(), w, lp, entropy=float(rng.gamma(2.0, 0.6))))
    if kind == "loop":
        out = out[: n // 2] + [out[n // 2 + (i % 5)] for i in range(n - n // 2)]
    if kind == "gaps":  # missing and clamped logprobs: signals computed from fewer scored tokens
        for i in range(3, n, 7):
            out[i] = Token(out[i].text, out[i].bytes, None)
    return out


def seg(tokens: list[Token]) -> Segment:
    return Segment(text="".join(t.text for t in tokens), side=Side.OUTPUT, tokens=tokens, backend="synthetic",
                   model="synthetic", tokenizer="words", logprob_mode=LogprobMode.RAW, scorer_id=SCORER.id)


@pytest.fixture(scope="module")
def synthetic():
    """Split conformal, several length buckets with length trends, a logistic detector (attacks given)."""
    rng = np.random.default_rng(0)
    feats, groups = {"train": [], "calib": [], "test": []}, {"train": [], "calib": [], "test": []}
    for i in range(900):
        split = ("train", "calib", "test")[i % 3]
        feats[split].append(features(seg(stream(1000 + i, int(rng.integers(16, 160)))), DEFAULT_WIDTHS))
        groups[split].append(f"g{i}")
    attacks = [features(seg(stream(5000 + i, 64, "salad")), DEFAULT_WIDTHS) for i in range(80)]
    return fit_from_features(SCORER, feats, groups, domain="synthetic", side=Side.OUTPUT, alphas=[0.01, 0.05],
                             widths=DEFAULT_WIDTHS, unit={"kind": "generation"}, corpus={"synthetic": 900},
                             signals=["max_w8", "min_w16", "whole_nll", "surprise_cusum", "distinct", "repeat_run"],
                             attack_feats=attacks, calibration="split", max_buckets=3)


def shipped():
    return sorted(regimes("general"), key=lambda b: float(b.unit["temperature"]))


def checkpoint_feats(baseline, tokens, every=8):
    s = StreamState(baseline.widths)
    for i, t in enumerate(tokens, 1):
        s.push(t)
        if i % every == 0:
            f = s.features(baseline.entropy_k)
            if f is not None:
                yield f


STREAMS = [(seed, kind) for seed in range(12) for kind in ("normal", "salad", "loop", "gaps")]


def _check(baseline, cuts):
    cleared = aborted = 0
    for cut in cuts:
        b = StreamBounds(baseline.calibrator, cut)
        for seed, kind in STREAMS:
            for f in checkpoint_feats(baseline, stream(seed, 96, kind)):
                tail = baseline.calibrator.assess(f, max(baseline.target_alphas)).tail_p
                if b.clear(f):
                    cleared += 1
                    assert tail > cut, (cut, seed, kind, f["n_scored"])
                aborted += tail <= cut
    return cleared, aborted


def test_cleared_checkpoints_cannot_abort_on_the_shipped_baselines():
    for base in shipped():
        cuts = [base.stream.threshold(0.01), base.stream.threshold(0.05), 1e-4, 0.3]
        cleared, aborted = _check(base, cuts)
        assert aborted > 0  # the streams reach both sides of the cut-offs
    assert cleared > 0


def test_cleared_checkpoints_cannot_abort_with_buckets_trends_and_a_logistic_detector(synthetic):
    cal = synthetic.calibrator
    assert len(cal.buckets) > 1 and any(b.trend for b in cal.buckets) and cal.parts[0].detector.kind == "logistic"
    cleared, aborted = _check(synthetic, [0.002, 0.01, 0.05, 0.2])
    assert cleared > 100 and aborted > 10


def test_the_bounds_are_tight_enough_to_clear_typical_checkpoints(synthetic):
    b = stream_bounds(synthetic.calibrator, 0.01)
    feats = [f for seed in range(20) for f in checkpoint_feats(synthetic, stream(seed, 96))]
    share = sum(b.clear(f) for f in feats) / len(feats)
    assert share > 0.5, share


def test_extreme_cut_offs():
    base = shipped()[0]
    f = next(iter(checkpoint_feats(base, stream(0, 32))))
    # a cut-off no tail statistic can stay above: nothing is cleared (everything goes to the full assessment)
    assert StreamBounds(base.calibrator, 1.0).clear(f) is False
    # a cut-off below the floor of every tail statistic: nothing can abort, everything is cleared
    assert StreamBounds(base.calibrator, 0.0).clear(f) is True


def test_the_assessor_decides_as_the_full_assessment_at_every_checkpoint(synthetic):
    for base in [*shipped(), synthetic]:
        cal = base.stream
        for abort_p in (0.01, 0.05):
            for seed, kind in STREAMS:
                toks = stream(seed, 96, kind)
                rules = StreamRules(check_every=8, abort_p=abort_p)
                fast, full = StreamAssessor(base, rules, 96), StreamAssessor(base, rules, 96, full=True)
                for t in toks:
                    fast.push(t)
                    full.push(t)
                assert [c.abort for c in fast.info.checkpoints] == [c.abort for c in full.info.checkpoints]
                assert fast.info.aborted_at == full.info.aborted_at
                assert full.info.cleared == 0 and all(c.tail_p is not None for c in full.info.checkpoints)
                for c in fast.info.checkpoints:  # a cleared checkpoint has no p-value; an abort always has one
                    assert (c.tail_p is None) == (c.p_value is None) == (c.top_signal is None)
                    assert not (c.abort and c.tail_p is None)
                assert fast.info.cleared == sum(c.tail_p is None for c in fast.info.checkpoints)
        assert cal is None or cal.check_every == 8


def test_the_stacked_detector_scores_equal_each_parts_own(synthetic):
    for base in [*shipped(), synthetic]:
        dets = [p.detector for p in base.calibrator.parts]
        bank = _DetectorBank(dets)
        assert bank.fast
        for seed, kind in STREAMS[:16]:
            for f in checkpoint_feats(base, stream(seed, 64, kind)):
                want = [d.score(f) for d in dets]
                assert bank.scores(f) == pytest.approx(want, rel=1e-9, abs=1e-9)
                g = {**f, dets[0].features[0]: math.nan}  # a missing input: each part's own z = 0
                assert bank.scores(g) == pytest.approx([d.score(g) for d in dets], rel=1e-12)


def test_bounds_are_made_once_per_cut_off_and_forgotten_on_recalibration(synthetic):
    cal = synthetic.calibrator.model_copy(deep=True)
    assert stream_bounds(cal, 0.01) is stream_bounds(cal, 0.01)
    assert stream_bounds(cal, 0.01) is not stream_bounds(cal, 0.05)
    first = stream_bounds(cal, 0.01)
    cal.set_calibration([100.0] * 200, [0.5] * 200)
    assert stream_bounds(cal, 0.01) is not first
