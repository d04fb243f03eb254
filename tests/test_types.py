import math

import pytest

from guardrail.offsets import char_spans
from guardrail.types import CLAMP_LOGPROB, Flag, normalize_logprob


@pytest.mark.parametrize(
    "raw, expected",
    [
        (-1.5, (-1.5, None)),
        (0.0, (0.0, None)),
        (5e-7, (0.0, None)),
        (None, (None, Flag.MISSING)),
        (float("nan"), (None, Flag.MISSING)),
        ("nan", (None, Flag.MISSING)),
        (float("inf"), (None, Flag.MISSING)),
        (3.0, (None, Flag.MISSING)),
        ({"x": 1}, (None, Flag.MISSING)),
        (True, (None, Flag.MISSING)),
        (CLAMP_LOGPROB, (None, Flag.CLAMPED)),
        (-10000.0, (None, Flag.CLAMPED)),
        (-math.inf, (None, Flag.CLAMPED)),
        (-9998.5, (-9998.5, None)),
    ],
)
def test_normalize_logprob(raw, expected):
    assert normalize_logprob(raw) == expected


def test_char_spans_ascii():
    assert char_spans("hello world", [b"hello", b" world"]) == [(0, 5, False), (5, 11, False)]


def test_char_spans_partial_utf8_pieces_span_the_whole_char():
    text = "a€b"  # € is 3 bytes
    e = "€".encode()
    spans = char_spans(text, [b"a", e[:1], e[1:], b"b"])
    assert spans == [(0, 1, False), (1, 2, True), (1, 2, True), (2, 3, False)]


def test_char_spans_mismatch_returns_none():
    assert char_spans("abc", [b"ab", b"x"]) is None
    assert char_spans("abc", [b"ab"]) is None


def test_char_spans_synthetic_leading_space():
    assert char_spans("hi there", [b" hi", b" there"]) == [(0, 2, False), (2, 8, False)]
    # the same over multi-byte text (no ASCII fast path): a leading space skipped, a character split in two
    assert char_spans("é tè", [" é".encode(), b" t", b"\xc3", b"\xa8"]) == [
        (0, 1, False), (1, 3, False), (3, 4, True), (3, 4, True)]
