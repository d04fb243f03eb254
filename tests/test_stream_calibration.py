"""Whole-stream calibration of the early-abort rule: the cut-off's rank rule, checkpoints that equal the
whole-text features inside the calibrated length and judge the last window past it, and -- on synthetic streams
from one distribution -- a realised false-abort rate anywhere in a stream near the budget, with the assessor
using the calibration (Bonferroni over checkpoints is not: its prefixes are judged against whole-output
references, here 12.7 % of streams cut for a 5 % budget)."""

from __future__ import annotations

import numpy as np
import pytest

from guardrail.backends.base import LogprobMode, ScorerInfo
from guardrail.baselines.features import features
from guardrail.baselines.fit import DEFAULT_WIDTHS, fit_from_features
from guardrail.baselines.stream_calibration import CheckpointFeatures, StreamCalibration, calibrate_stream
from guardrail.guard.policy import StreamRules
from guardrail.guard.stream_assess import StreamAssessor
from guardrail.types import Segment, Side, Token

SCORER = ScorerInfo(backend="synthetic", model="synthetic", weights="none", tokenizer="words",
                    logprob_mode=LogprobMode.RAW)
SIGNALS = ["max_w8", "min_w8", "max_w16", "whole_nll", "surprise_cusum", "repeat_run"]


def stream(rng: np.random.Generator, n: int) -> list[Token]:
    out = []
    for _ in range(n):
        w = f" w{int(rng.integers(0, 300))}".encode()
        lp = -float(rng.gamma(1.3, 0.8))
        out.append(Token(w.decode(), w, lp, entropy=float(rng.gamma(2.0, 0.6))))
    return out


def seg(tokens: list[Token]) -> Segment:
    return Segment(text="".join(t.text for t in tokens), side=Side.OUTPUT, tokens=tokens, backend="synthetic",
                   model="synthetic", tokenizer="words", logprob_mode=LogprobMode.RAW, scorer_id=SCORER.id)


@pytest.fixture(scope="module")
def baseline():
    rng = np.random.default_rng(0)
    feats, groups = {"train": [], "calib": [], "test": []}, {"train": [], "calib": [], "test": []}
    for i in range(450):
        split = ("train", "calib", "test")[i % 3]
        feats[split].append(features(seg(stream(rng, 64)), DEFAULT_WIDTHS))
        groups[split].append(f"g{i}")
    return fit_from_features(SCORER, feats, groups, domain="synthetic", side=Side.OUTPUT, alphas=[0.01, 0.05],
                             widths=DEFAULT_WIDTHS, signals=SIGNALS, unit={"kind": "generation", "max_tokens": 64},
                             corpus={"synthetic": 450}, detector=False, max_buckets=1)


def test_the_cut_off_is_the_rank_floor_alpha_n_plus_1_minimum():
    cal = StreamCalibration(check_every=16, calibrated_length=64, n=99, minima=[i / 1000 for i in range(1, 100)])
    assert cal.threshold(0.05) == cal.minima[4]  # floor(0.05 * 100) = 5th smallest
    assert cal.threshold(0.01) == cal.minima[0]
    assert cal.threshold(0.005) is None and cal.resolution == 0.01


def test_checkpoints_are_the_prefix_features_then_the_last_window():
    toks = stream(np.random.default_rng(1), 100)
    cf = CheckpointFeatures(DEFAULT_WIDTHS, None, 16, 48)
    got = {}
    for t in toks:
        f = cf.push(t)
        if f is not None:
            got[cf.n] = f
    assert sorted(got) == [16, 32, 48, 64, 80, 96]
    for n, f in got.items():
        want = features(seg(toks[:n] if n <= 48 else toks[n - 48:n]), DEFAULT_WIDTHS)
        for k, v in want.items():
            assert f[k] == pytest.approx(v, rel=1e-9, abs=1e-12), (n, k)


def test_calibrated_whole_stream_false_aborts_are_near_the_budget_and_bonferroni_is_not(baseline):
    rng = np.random.default_rng(2)
    cal = calibrate_stream(baseline, [stream(rng, 64) for _ in range(400)], check_every=16, length=64)
    b = baseline.model_copy(update={"stream": cal})
    fresh = [stream(rng, 64) for _ in range(1000)]

    def cut_rate(bl, abort_p):
        cut = 0
        for toks in fresh:
            a = StreamAssessor(bl, StreamRules(check_every=16, abort_p=abort_p), 64)
            cut += any((cp := a.push(t)) is not None and cp.abort for t in toks)
        return cut / len(fresh), a.info

    rate, info = cut_rate(b, 0.05)
    assert info.method == "calibrated" and info.calibration_n == 400 and info.threshold == cal.threshold(0.05)
    assert 0.025 <= rate <= 0.075  # binomial(1000, 0.05) 99.9 % interval is about [0.029, 0.074]
    plain, pinfo = cut_rate(baseline, 0.05)
    assert pinfo.method == "bonferroni" and not 0.025 <= plain <= 0.075


def test_a_budget_below_the_calibrations_resolution_falls_back_to_bonferroni(baseline):
    cal = StreamCalibration(check_every=16, calibrated_length=64, n=50, minima=[0.5] * 50)
    a = StreamAssessor(baseline.model_copy(update={"stream": cal}), StreamRules(check_every=8, abort_p=0.01), 64)
    assert a.info.method == "bonferroni" and a.info.check_every == 8 and a.info.threshold == pytest.approx(0.01 / 8)
    a = StreamAssessor(baseline.model_copy(update={"stream": cal}), StreamRules(check_every=8, abort_p=0.1), 200)
    assert a.info.method == "calibrated" and a.info.check_every == 16  # the calibrated interval wins


def _stored(tokens, temperature=0.0, loop=False, onset=None):
    from guardrail.evaluation.generations import StoredGeneration

    return StoredGeneration("p", temperature, 1, 64, "", "length", loop, onset, tuple(tokens))


def test_eval_streams_rates_ablation_and_loops(baseline):
    from guardrail.evaluation.stream_eval import acceptance_99, eval_streams

    rng = np.random.default_rng(3)
    cal = calibrate_stream(baseline, [stream(rng, 64) for _ in range(300)], check_every=16, length=64)
    b = baseline.model_copy(update={"stream": cal})
    loop_tok = Token(" again", b" again", -0.01, entropy=0.05)
    loops = [_stored(stream(rng, 8) + [loop_tok] * 56, loop=True, onset=8) for _ in range(20)]
    normal = [_stored(stream(rng, 64)) for _ in range(200)]
    doc = eval_streams({"0": normal + loops}, lambda t: b, alpha=0.05, check_every=16)
    row = doc["by_temperature"]["0"]
    assert row["n"] == 200 and row["n_loops"] == 20 and row["method"] == "calibrated"
    assert row["binomial_99"] == acceptance_99(200, 0.05) and row["within_binomial_99"]
    assert row["per_prefix_abort_rate"] >= row["abort_rate"]  # checking every prefix at alpha cuts more
    assert doc["check_interval"] == 16
    assert doc["loops"]["n"] == 20 and doc["loops"]["abort_rate"] == 1.0
    assert 0 < doc["loops"]["median_tokens_after_onset"] <= 24  # cut at the first or second checkpoint after it


@pytest.mark.slow
def test_eval_stream_cli_generates_stores_and_replays(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    store = tmp_path / "gens.jsonl"
    args = [sys.executable, "-m", "guardrail.cli", "eval", "stream", "--data",
            str(Path(__file__).parent / "data" / "benign_sample.jsonl"), "--temperatures", "0,1.8", "--max-tokens",
            "48", "--limit", "10", "--alpha", "0.05", "--store", str(store), "--json"]
    first = subprocess.run(args, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr
    doc = json.loads(first.stdout)
    assert set(doc["by_temperature"]) == {"0", "1.8"} and doc["n_prompts"] == 10
    for row in doc["by_temperature"].values():
        assert row["n"] + row["n_loops"] == 10 and row["method"] == "calibrated" and row["check_every"] >= 1
        assert 0.0 <= row["abort_rate"] <= 1.0 and row["binomial_99"][0] <= 0.05 <= row["binomial_99"][1]
    assert doc["by_temperature"]["1.8"]["abort_rate"] >= 0.5  # word salad from the first tokens
    lines = store.read_text().splitlines()
    assert len(lines) == 20 and oct(store.stat().st_mode & 0o777) == "0o600"
    again = subprocess.run(args, capture_output=True, text=True, timeout=300)  # replayed from the store
    assert again.returncode == 0 and json.loads(again.stdout) == doc and store.read_text().splitlines() == lines


def test_a_budget_below_the_baselines_fitted_alphas_still_assesses(baseline):
    a = StreamAssessor(baseline, StreamRules(check_every=16, abort_p=0.0001), 64)
    cps = [cp for t in stream(np.random.default_rng(5), 64) if (cp := a.push(t)) is not None]
    assert len(cps) == 4 and a.info.threshold == pytest.approx(0.0001 / 4)  # no refusal mid-stream


def test_an_every_prefix_calibration_is_the_minimum_over_all_prefixes_past_min_tokens(baseline):
    rng = np.random.default_rng(6)
    gens = [stream(rng, 40) for _ in range(12)]
    cal = calibrate_stream(baseline, gens, check_every=1, length=32, min_tokens=8)
    assert cal.every_prefix and cal.min_tokens == 8 and cal.calibrated_length == 32 and cal.source is None
    want = sorted(min(baseline.assess(features(seg(g[:n]), DEFAULT_WIDTHS), 0.05).tail_p for n in range(8, 33))
                  for g in gens)
    assert cal.minima == pytest.approx(want, rel=1e-9)
    # a fixed-interval calibration is not one over every prefix; files written before min_tokens existed keep
    # their checksum (load_baseline refuses a mismatch as tampering)
    assert not StreamCalibration(check_every=8, calibrated_length=64, n=1, minima=[0.5]).every_prefix
    from guardrail.baselines.model import load_baseline
    from guardrail.baselines.registry import shipped

    old = load_baseline(shipped()[("general~t0", "output")])
    assert old.stream is not None and old.stream.min_tokens is None and not old.stream.every_prefix


def test_an_every_prefix_calibration_holds_for_any_checkpoint_schedule(baseline):
    """Calibrated over every prefix of 8 to 48 tokens: checking at every token cuts about alpha of fresh normal
    streams; every 5 or every 16 tokens (prefixes the calibration also saw) cuts no more; the policy's interval
    is used (the calibration's 1 would check every token) and prefixes under min_tokens are never cut."""
    rng = np.random.default_rng(7)
    cal = calibrate_stream(baseline, [stream(rng, 48) for _ in range(300)], check_every=1, length=48, min_tokens=8)
    b = baseline.model_copy(update={"stream": cal})
    fresh = [stream(rng, 48) for _ in range(400)]
    cut = {}
    for every in (1, 5, 16):
        cut[every] = []
        for toks in fresh:
            a = StreamAssessor(b, StreamRules(check_every=every, abort_p=0.05), 48)
            cut[every].append(any((cp := a.push(t)) is not None and cp.abort for t in toks))
        assert a.info.method == "calibrated" and a.info.check_every == every and a.min_tokens == 8
    assert 0.015 <= np.mean(cut[1]) <= 0.095  # Binomial(400, 0.05) 99.9 % interval is about [0.022, 0.087]
    for every in (5, 16):  # a sparser schedule cuts only streams that checking every token cuts
        assert all(c1 or not c for c1, c in zip(cut[1], cut[every], strict=True))
        assert 0 < sum(cut[every]) < sum(cut[1])
    # a prefix shorter than min_tokens is never cut, whatever its statistic
    a = StreamAssessor(b.model_copy(update={"stream": cal.model_copy(update={"minima": [1.0] * cal.n})}),
                       StreamRules(check_every=1, abort_p=0.05), 48)
    cps = [a.push(t) for t in fresh[0][:12]]
    assert not any(cp.abort for cp in cps[:7]) and all(cp.abort for cp in cps[7:])


class _WordScorer:
    """score_reply(messages, text): the answer's tokens (one a word), looked up from the stream it came from."""

    def __init__(self, tokens: list[Token]) -> None:
        self.tokens, self.calls = tokens, []

    async def score_reply(self, messages, text):
        n = len(text.split())
        self.calls.append(n)
        assert "".join(t.text for t in self.tokens[:n]) == text
        return seg(self.tokens[:n])


def test_teacher_forced_checkpoints_use_an_every_prefix_calibration_without_the_scorers_last_token(baseline):
    import asyncio

    from guardrail.guard.stream_assess import TeacherForcedCheckpoints

    rng = np.random.default_rng(8)
    cal = calibrate_stream(baseline, [stream(rng, 40) for _ in range(60)], check_every=1, length=24, min_tokens=8,
                           source="teacher_forced")
    b = baseline.model_copy(update={"stream": cal})
    # the serving model's own stream does not use a calibration made on teacher-forced answers
    assert StreamAssessor(b, StreamRules(check_every=6, abort_p=0.05), 40).info.method == "bonferroni"
    toks = stream(rng, 40)
    scorer = _WordScorer(toks)
    tf = TeacherForcedCheckpoints(b, StreamRules(embedded_every=6, abort_p=0.05), 40, scorer, [])
    assert tf.info.method == "calibrated" and tf.info.threshold == cal.threshold(0.05) and tf.info.check_every == 6

    async def run():
        return [cp for t in toks if (cp := await tf.push(t.text)) is not None]
    cps = asyncio.run(run())
    assert scorer.calls == [6, 12, 18, 24, 30, 36]
    assert [c.tokens for c in cps] == [12, 18, 24, 30, 36]  # at 6 the scorer's first 5 tokens: under min_tokens
    for c in cps:  # judged: the scorer's tokens but its last, at most the calibrated length of them
        n = c.tokens - 1
        want = baseline.assess(features(seg(toks[max(0, n - 24):n]), DEFAULT_WIDTHS), 0.05)
        assert c.p_value is None or c.tail_p == pytest.approx(want.tail_p, rel=1e-9)
        assert c.abort == (want.tail_p <= cal.threshold(0.05))
    assert tf.info.beyond_calibrated  # 29 and 35 scorer tokens judged: past 24
    # a calibration of a model's own generations (even over every prefix) is not used for another backend's
    own = baseline.model_copy(update={"stream": cal.model_copy(update={"source": None})})
    tf = TeacherForcedCheckpoints(own, StreamRules(embedded_every=6, abort_p=0.05), 40, _WordScorer(toks), [])
    assert tf.info.method == "bonferroni" and tf.info.threshold == pytest.approx(0.05 / 7)
    assert StreamAssessor(own, StreamRules(check_every=6, abort_p=0.05), 40).info.method == "calibrated"


def test_settled_tokens_end_before_the_last_whitespace():
    """A growing text's last word may be cut mid-way ("The photosynth": the scorer reads " photos", "yn", "th";
    the finished word is one token): only the tokens before the last whitespace are judged."""
    from guardrail.guard.stream_assess import settled

    text = "Plants use light.\n\nThe photosynth"
    pieces = ["Plants", " use", " light", ".", "\n", "\n", "The", " photos", "yn", "th"]
    toks, at = [], 0
    for p in pieces:
        toks.append(Token(p, p.encode(), -1.0, None, at, at + len(p), entropy=1.0))
        at += len(p)
    assert settled(toks, text) == 7  # up to "The"
    assert settled(toks[:4], "Plants use light.") == 2  # "Plants", " use": " light." may grow
    assert settled(toks[:6], "Plants use light.\n\n") == 5  # the last newline may join what follows
    assert settled(toks[:1], "Plants") == 0
    no_offsets = [Token(p, p.encode(), -1.0, entropy=1.0) for p in pieces]
    assert settled(no_offsets, text) == 9  # without offsets: all but the last
