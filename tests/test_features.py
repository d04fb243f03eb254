"""Feature vector pieces: the repetition run (vs a naive reference) and its place among the signals."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guardrail.baselines.features import FEATURE_TAILS, repeat_run, tail_of


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
