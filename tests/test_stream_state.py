"""The incremental stream state equals the whole-text features on every prefix (random streams with missing,
clamped, special and no-context tokens, repeats and entropies missing), and its top windows carry spans."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from guardrail.baselines.features import features
from guardrail.baselines.stream_state import StreamState
from guardrail.types import Flag, LogprobMode, Segment, Side, Token

WIDTHS = (8, 16, 32)


def make_token(i: int, kind: str, nll: float, ent: float | None, word: int) -> Token:
    text = f" w{word}"
    flags: frozenset[Flag] = frozenset()
    lp: float | None = -nll
    if kind == "missing":
        lp, flags = None, frozenset({Flag.MISSING})
    elif kind == "clamped":
        lp, flags = None, frozenset({Flag.CLAMPED})
    elif kind == "special":
        flags = frozenset({Flag.SPECIAL})
    elif kind == "no_context":
        lp, flags = None, frozenset({Flag.NO_CONTEXT})
    return Token(text, text.encode(), lp, None, 0, 0, flags=flags, entropy=ent)


tokens_st = st.lists(
    st.tuples(st.sampled_from(["ok"] * 12 + ["missing", "clamped", "special", "no_context"]),
              st.floats(0.0, 25.0), st.none() | st.floats(0.0, 10.0), st.integers(0, 6)),
    min_size=1, max_size=90)


def seg_of(tokens: list[Token]) -> Segment:
    return Segment(text="", side=Side.OUTPUT, tokens=tokens, backend="t", model="t", tokenizer="t",
                   logprob_mode=LogprobMode.RAW, scorer_id="t", entropy_k=49152)


def close(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))


@settings(max_examples=300, deadline=None)
@given(spec=tokens_st)
def test_every_prefix_matches_the_whole_text_features(spec):
    toks = [make_token(i, *s) for i, s in enumerate(spec)]
    state = StreamState(WIDTHS)
    for k, t in enumerate(toks, 1):
        state.push(t)
        want = features(seg_of(toks[:k]), WIDTHS)
        got = state.features(49152)
        if want is None:
            assert got is None
            continue
        assert got is not None and set(got) == set(want)
        bad = {f: (got[f], want[f]) for f in want if not close(got[f], want[f])}
        assert not bad, (k, bad)


def test_top_window_span_points_at_the_burst():
    rng = np.random.default_rng(0)
    nll = list(rng.uniform(1, 3, 40)) + [12.0] * 8 + list(rng.uniform(1, 3, 40))
    state = StreamState(WIDTHS)
    state.extend([make_token(i, "ok", x, 2.0, i) for i, x in enumerate(nll)])
    m, start, end = state.window(8)
    assert (start, end) == (40, 48) and m == 12.0
    low = state.window(8, "min")
    assert low is not None and low[0] < 3
    short = StreamState((8,))
    short.extend([make_token(i, "ok", 2.0, 1.0, i) for i in range(3)])
    assert short.window(8) == (2.0, 0, 3)  # fewer scored tokens than the width: one window over all


def test_nothing_scored_gives_none():
    state = StreamState()
    state.push(make_token(0, "missing", 0.0, None, 0))
    assert state.features() is None and state.window(8) is None


def test_a_long_run_of_one_token_streams_as_the_whole_text_reads_it():
    """same_run counts only past SAME_RUN_FREE identical tokens in a row (16): the random streams above never get
    there, so a run of 20 -- one broken after 10 by another word, one with a missing and a special token inside
    -- goes through every prefix here."""
    from guardrail.baselines.features import SAME_RUN_FREE

    kinds = ["ok"] * 20
    kinds[7], kinds[13] = "missing", "special"
    for words in ([1, 2] + [5] * 20 + [3], [1] + [5] * 10 + [4] + [5] * 12, [5] * 20):
        toks = [make_token(i, kinds[i % 20] if w == 5 else "ok", 3.0, 1.0, w) for i, w in enumerate(words)]
        state = StreamState(WIDTHS)
        for k, t in enumerate(toks, 1):
            state.push(t)
            want, got = features(seg_of(toks[:k]), WIDTHS), state.features(49152)
            assert got is not None and want is not None
            assert {f for f in want if not close(got[f], want[f])} == set(), k
        longest = max(len(r) for r in "".join("x" if w == 5 else " " for w in words).split())
        assert got["same_run"] == max(0, longest - SAME_RUN_FREE)
    assert got["same_run"] == 4  # the last: 20 in a row
