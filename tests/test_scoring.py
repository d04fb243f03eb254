"""Pure scoring core: definitions, edge cases, and the O(N) windows against a naive reference."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guardrail.errors import ConfigError
from guardrail.scoring import TokenArrays, check_widths, entropy_from_top, score_arrays, score_segment, window_means
from guardrail.types import Flag, LogprobMode, Segment, Side, Token


def naive_window_means(v, w):
    return np.array([sum(v[i : i + w]) / w for i in range(len(v) - w + 1)])


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.floats(min_value=0, max_value=50, allow_nan=False), min_size=0, max_size=300),
    st.integers(min_value=1, max_value=64),
)
def test_window_means_equal_naive(values, w):
    v = np.array(values, dtype=np.float64)
    fast = window_means(v, w)
    ref = naive_window_means(values, w)
    assert fast.shape == (max(0, len(values) - w + 1),)
    np.testing.assert_allclose(fast, ref, rtol=1e-9, atol=1e-9)


def _arrays(nll, excluded=()):
    n = len(nll)
    a = np.array(nll, dtype=np.float64)
    for i in excluded:
        a[i] = np.nan
    return TokenArrays(
        nll=a, start=np.arange(n) * 2, end=np.arange(n) * 2 + 2, nbytes=np.full(n, 2),
        entropy=np.full(n, np.nan),
    )


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(min_value=0, max_value=30, allow_nan=False), min_size=1, max_size=120),
    st.sets(st.integers(min_value=0, max_value=119), max_size=40),
    st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=4),
)
def test_max_window_equals_naive_over_scored_tokens(nll, excluded, widths):
    excluded = {i for i in excluded if i < len(nll)}
    a = _arrays(nll, excluded)
    valid = [i for i in range(len(nll)) if i not in excluded]
    score, curves = score_arrays(a, widths, curves=True)
    if not valid:
        assert score.whole.nll is None and score.max_window is None and score.windows == []
        return
    vals = [nll[i] for i in valid]
    assert score.whole.nll == pytest.approx(sum(vals) / len(vals), rel=1e-9, abs=1e-12)
    assert score.whole.n_scored == len(valid) and score.whole.n_excluded == len(excluded)
    uniq = list(dict.fromkeys(widths))
    assert [w.width for w in score.windows] == uniq
    for win in score.windows:
        eff = min(win.width, len(valid))
        ref = naive_window_means(vals, eff)
        assert win.effective_width == eff
        assert win.nll == pytest.approx(ref.max(), rel=1e-9, abs=1e-9)
        best = valid.index(win.token_start)  # ties may pick any maximal window
        assert ref[best] == pytest.approx(ref.max(), rel=1e-9, abs=1e-9)
        # span: from the first to the last scored token of the window
        assert win.token_start == valid[best] and win.token_end == valid[best + eff - 1] + 1
        assert win.start == 2 * valid[best] and win.end == 2 * valid[best + eff - 1] + 2
        np.testing.assert_allclose(curves[win.width], ref, rtol=1e-9, atol=1e-9)
    assert score.max_window == score.windows[0]


def test_whole_text_stats_by_hand():
    a = _arrays([1.0, 2.0, 3.0, 4.0])
    score, _ = score_arrays(a, (2,))
    assert score.whole.nll == pytest.approx(2.5)
    assert score.whole.ppl == pytest.approx(math.exp(2.5))
    assert score.whole.bits_per_byte == pytest.approx(10.0 / math.log(2) / 8)
    assert score.max_window.nll == pytest.approx(3.5)
    assert (score.max_window.start, score.max_window.end) == (4, 8)


def test_short_text_has_one_window_over_all_scored_tokens():
    score, _ = score_arrays(_arrays([1.0, 5.0, 3.0]), (8, 2))
    w8 = score.windows[0]
    assert w8.width == 8 and w8.effective_width == 3 and w8.short
    assert w8.nll == pytest.approx(3.0)
    assert (w8.start, w8.end) == (0, 6)
    assert score.windows[1].nll == pytest.approx(4.0) and not score.windows[1].short


def test_all_missing_is_unscorable_not_zero():
    score, _ = score_arrays(_arrays([1.0, 2.0], excluded=(0, 1)), (4,))
    assert not score.scorable
    assert score.whole.nll is None and score.whole.ppl is None and score.whole.bits_per_byte is None
    assert score.max_window is None


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "8"])
def test_bad_widths_rejected(bad):
    with pytest.raises(ConfigError, match="window width"):
        check_widths([bad])


def test_duplicate_widths_collapse_in_order():
    assert check_widths([16, 8, 16]) == (16, 8)


def _seg(tokens):
    return Segment(text="x" * 100, side=Side.TEXT, tokens=tokens, backend="t", model="m", tokenizer="tok",
                   logprob_mode=LogprobMode.RAW, scorer_id="s")


def test_clamped_missing_special_are_excluded_and_counted():
    toks = [
        Token("a", b"a", None, start=0, end=1, flags=frozenset({Flag.NO_CONTEXT})),
        Token("b", b"b", -2.0, start=1, end=2),
        Token("c", b"c", None, start=2, end=3, flags=frozenset({Flag.CLAMPED})),
        Token("d", b"d", None, start=3, end=4, flags=frozenset({Flag.MISSING})),
        Token("<s>", b"<s>", -20.0, start=4, end=4, flags=frozenset({Flag.SPECIAL})),
        Token("e", b"e", -4.0, start=4, end=5),
    ]
    s = score_segment(_seg(toks), (2,))
    w = s.whole
    assert (w.n_scored, w.n_excluded, w.n_clamped, w.n_missing, w.n_special, w.n_no_context) == (2, 4, 1, 1, 1, 1)
    assert w.nll == pytest.approx(3.0)  # clamped is not -9999 averaged in, special -20 not counted
    assert (s.max_window.start, s.max_window.end) == (1, 5)  # spans the excluded tokens between b and e


def test_entropy_from_top_is_lower_bound_of_full():
    rng = np.random.default_rng(0)
    z = rng.normal(size=1000)
    lp = z - np.log(np.exp(z).sum())
    full = float(-(np.exp(lp) * lp).sum())
    top = np.sort(lp)[-5:]
    assert 0 < entropy_from_top(top) < full


def test_mean_entropy_reported_with_k():
    toks = [Token("a", b"a", -1.0, start=0, end=1, entropy=2.0), Token("b", b"b", -1.0, start=1, end=2, entropy=4.0)]
    seg = _seg(toks)
    seg.entropy_k = 5
    s = score_segment(seg, (2,))
    assert s.whole.mean_entropy == pytest.approx(3.0) and s.whole.entropy_k == 5
