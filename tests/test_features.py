"""Feature vector pieces: the repetition run (vs a naive reference) and its place among the signals."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guardrail.baselines.features import FEATURE_TAILS, lag_repeat, repeat_run, tail_of


def _naive(ids, period=4):
    best = cur = 0
    for i in range(len(ids)):
        if any(i - p >= 0 and ids[i] == ids[i - p] for p in range(1, period + 1)):
            cur += 1
            best = max(best, cur)
        else:
            cur = 0
    return best


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 6), max_size=60), st.integers(1, 6))
def test_repeat_run_matches_naive(ids, period):
    assert repeat_run(np.array(ids, dtype=np.int64), period) == _naive(ids, period)


def test_repeat_run_examples():
    assert repeat_run(np.array([1, 2, 3, 4, 5])) == 0
    assert repeat_run(np.array([9, 7, 7, 7, 7, 2])) == 3  # "! ! ! !": every token after the first repeats
    assert repeat_run(np.array([1, 2, 1, 2, 1, 2, 9])) == 4  # period 2 loop
    assert repeat_run(np.array([1, 2, 3, 4, 5, 1])) == 0  # period 5 is beyond the default 4
    assert repeat_run(np.array([], dtype=np.int64)) == 0


def test_repeat_run_is_a_high_tail_signal():
    assert FEATURE_TAILS["repeat_run"] == "high" and tail_of("repeat_run") == "high"


def _naive_cusum(nll, ent, drift):
    best = 0.0
    for i in range(len(nll)):
        for j in range(i, len(nll)):
            best = max(best, sum(nll[t] - ent[t] - drift for t in range(i, j + 1)))
    return best


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 15), st.floats(0, 8)), min_size=1, max_size=30))
def test_surprise_cusum_is_the_best_stretch_sum(pairs):
    from guardrail.baselines.features import surprise_cusum

    nll = np.array([p[0] for p in pairs])
    ent = np.array([p[1] for p in pairs])
    assert surprise_cusum(nll, ent, 1.0) == pytest.approx(_naive_cusum(nll, ent, 1.0), abs=1e-9)


def test_surprise_cusum_skips_tokens_without_values():
    from guardrail.baselines.features import surprise_cusum

    nll = np.array([np.nan, 5.0, 6.0, np.nan])
    ent = np.array([1.0, 1.0, np.nan, 1.0])
    assert surprise_cusum(nll, ent, 1.0) == pytest.approx(3.0)  # only token 1 has both
    assert np.isnan(surprise_cusum(np.array([np.nan]), np.array([1.0])))


def _seg(pieces, ids=True):
    """A segment of tokens with the given texts (logprob -3, entropy 1) -- with or without token ids."""
    from guardrail.types import LogprobMode, Segment, Side, Token

    toks, pos, vocab = [], 0, {}
    for t in pieces:
        toks.append(Token(text=t, bytes=t.encode(), logprob=-3.0, token_id=vocab.setdefault(t, len(vocab)) if ids else None,
                          start=pos, end=pos + len(t), entropy=1.0))
        pos += len(t)
    return Segment(text="".join(pieces), side=Side.PROMPT, tokens=toks, backend="t", model="m", tokenizer="k",
                   logprob_mode=LogprobMode.RAW, scorer_id="s")


def test_repetition_signals_read_bytes_not_ids():
    """Through an OpenAI-compatible server tokens carry text, not ids: the repetition signals must not go
    constant there (they read 1.0 and 0 before)."""
    from guardrail.baselines.features import SAME_RUN_FREE, features

    filler = ["Tell", " me", " how", *([" !"] * 25)]
    with_ids, without = features(_seg(filler), (8,)), features(_seg(filler, ids=False), (8,))
    for name in ("distinct", "repeat_run", "same_run"):
        assert with_ids[name] == without[name]
    assert without["same_run"] == 25 - SAME_RUN_FREE and without["repeat_run"] == 24 and without["distinct"] == 4 / 28


def test_same_run_ignores_short_runs_and_excess_cusum_needs_a_long_stretch():
    from guardrail.baselines.features import EXCESS_DRIFT, SAME_RUN_FREE, features

    prose = features(_seg(["a", " b", " b", " b", " b", " c"]), (8,))
    assert prose["same_run"] == 0  # four identical tokens in a row: still ordinary
    # a pasted table or separator line repeats a token a dozen times (development text reaches 11): still ordinary
    assert SAME_RUN_FREE == 16
    assert features(_seg(["a", *([" b"] * 16), " c"]), (8,))["same_run"] == 0
    assert features(_seg(["a", *([" b"] * 18)]), (8,))["same_run"] == 2
    # every token 2 nats beyond its entropy (-3 logprob, entropy 1): below the 2.2-nat drift, nothing accumulates
    assert EXCESS_DRIFT > 2.0 and prose["excess_cusum"] == 0.0
    assert prose["surprise_cusum"] == pytest.approx(6 * 1.0)  # the 1-nat drift one does: 1 nat a token


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(0, 12), min_size=1, max_size=40), st.floats(0.5, 3.0))
def test_cusum_stretch_sums_to_the_cusum(nll, drift):
    from guardrail.baselines.features import cusum_stretch, surprise_cusum

    nll, ent = np.array(nll), np.ones(len(nll))
    value, st_ = surprise_cusum(nll, ent, drift), cusum_stretch(nll, ent, drift)
    if value <= 0:
        assert st_ is None
    else:
        i, j = st_
        assert 0 <= i < j <= len(nll)
        assert (nll[i:j] - ent[i:j] - drift).sum() == pytest.approx(value, rel=1e-9, abs=1e-9)


def test_cusum_stretch_covers_a_suffix_and_skips_missing_tokens():
    from guardrail.baselines.features import cusum_stretch

    nll = np.array([1.0, np.nan, 1.0, 2.0, 9.0, np.nan, 8.0, 9.5, 1.0, 1.0])
    assert cusum_stretch(nll, np.ones(10), 2.2) == (4, 8)
    assert cusum_stretch(np.full(5, np.nan), np.ones(5), 2.2) is None


def _naive_lag(ids, max_lag=16, window=32):
    best = 0
    for p in range(1, max_lag + 1):
        hits = [i for i in range(p, len(ids)) if ids[i] == ids[i - p]]
        for end in range(p, len(ids)):  # windows of `window` positions (of those that have a lag-p partner)
            lo = max(p, end - window + 1)
            best = max(best, sum(1 for i in hits if lo <= i <= end))
    return best


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 5), max_size=70))
def test_lag_repeat_matches_naive(ids):
    from guardrail.baselines.features import lag_repeat

    assert lag_repeat(np.array(ids, dtype=np.int64)) == _naive_lag(ids)


def test_lag_repeat_sees_a_loop_with_a_changing_counter():
    from guardrail.baselines.features import lag_repeat

    loop = []
    for n in range(12):  # '1. "The",\n 2. "The",\n ...': period 6, one token changes every cycle
        loop += [100 + n, 1, 2, 3, 4, 5]
    assert lag_repeat(np.array(loop)) >= 26  # 5 of every 6 positions match at lag 6
    assert lag_repeat(np.arange(80)) == 0
    assert FEATURE_TAILS["lag_repeat"] == "high"


@settings(max_examples=250, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", " b", " !", "c", " dd", "<x>"]),
                          st.one_of(st.none(), st.floats(-15.0, 0.0)), st.one_of(st.none(), st.floats(0.0, 8.0)),
                          st.booleans()), min_size=0, max_size=60),
       st.sets(st.sampled_from(["max_w8", "min_w16", "whole_nll", "bits_per_byte", "mean_entropy", "distinct",
                                "spike_frac", "excluded_frac", "surprise_cusum", "excess_cusum", "repeat_run",
                                "same_run", "lag_repeat", "log_len"])))
def test_features_of_a_subset_equal_the_full_call(toks, only):
    """``features(only=S)`` (the request path computes only what its baseline reads) gives, for every key it
    returns, exactly the full call's value, on tokens with missing logprobs or entropies and special ones."""
    from guardrail.baselines.features import features
    from guardrail.types import Flag, LogprobMode, Segment, Side, Token

    tokens, pos = [], 0
    for text, lp, ent, special in toks:
        tokens.append(Token(text, text.encode(), lp, None, pos, pos + len(text), (),
                            frozenset({Flag.SPECIAL}) if special else frozenset(), ent))
        pos += len(text)
    seg = Segment("".join(t for t, *_ in toks), Side.OUTPUT, tokens, "t", "m", "k", LogprobMode.RAW, "s", entropy_k=9)
    full, part = features(seg, (8, 16)), features(seg, (8, 16), only=only)
    if full is None:
        assert part is None
        return
    assert {"n_scored", "entropy_k"} <= part.keys() <= full.keys() and (only & full.keys()) <= part.keys()
    for k, v in part.items():
        assert v == full[k] or (np.isnan(v) and np.isnan(full[k])), k


def test_a_calibrators_inputs_are_every_parts_detector_features():
    """Each cross-conformal fold's detector drops inputs constant in its own units: the features a verdict
    computes must cover every part's list, or a part would read a missing input as typical."""
    from guardrail.baselines.registry import resolve

    cal = resolve("general", "output").calibrator.model_copy(deep=True)
    det = cal.parts[1].detector
    assert det is not None and "excess_cusum" not in cal.inputs
    cal.parts[1].detector = det.model_copy(update={"features": [*det.features, "excess_cusum"]})
    assert "excess_cusum" in cal.inputs and set(cal.parts[0].detector.features) <= cal.inputs


def test_repetition_of_negative_ids_does_not_match_the_padding():
    """Outside callers pass token ids, which may be negative (a missing id as -1): a position before the text
    never matches one."""
    assert repeat_run(np.array([-1, 5])) == 0 and repeat_run(np.array([-1, -1])) == 1
    assert lag_repeat(np.array([-1, 5, -1])) == 1
