import pytest

from guardrail.cache import ScoreCache, segment_from_dict, segment_to_dict
from guardrail.types import Flag, LogprobMode, Segment, Side, Token, TopLogprob


def _seg(text="héllo"):
    toks = [
        Token("h", b"h", None, 1, 0, 1, (), frozenset({Flag.NO_CONTEXT})),
        Token("é", "é".encode()[:1], -3.5, 2, 1, 2, (TopLogprob("x", -0.1, 9),), frozenset({Flag.PARTIAL_UTF8}), 1.25),
        Token("é", "é".encode()[1:], -0.5, 3, 1, 2, (), frozenset({Flag.PARTIAL_UTF8}), 0.5),
        Token("llo", b"llo", -1.0, 4, 2, 5, (), frozenset(), 2.0),
    ]
    return Segment(text, Side.PROMPT, toks, "b", "m", "tok", LogprobMode.RAW, "scorer-1", entropy_k=100, n_chunks=1,
                   notes=["n"])


def test_round_trip_is_exact():
    seg = _seg()
    back = segment_from_dict(segment_to_dict(seg), seg.text)
    assert back == seg


def test_cache_hits_by_scorer_side_and_text(tmp_path):
    c = ScoreCache(tmp_path / "s.sqlite")
    seg = _seg()
    c.put_many([seg])
    assert c.get_many("scorer-1", Side.PROMPT, [seg.text]) == {seg.text: seg}
    assert c.get_many("scorer-2", Side.PROMPT, [seg.text]) == {}
    assert c.get_many("scorer-1", Side.OUTPUT, [seg.text]) == {}
    assert c.get_many("scorer-1", Side.PROMPT, ["other"]) == {}
    assert (c.hits, c.misses) == (1, 3)
    c.close()
    # persistent across instances
    c2 = ScoreCache(tmp_path / "s.sqlite")
    assert c2.get_many("scorer-1", Side.PROMPT, [seg.text])[seg.text] == seg


def test_corrupt_entry_is_a_miss(tmp_path):
    c = ScoreCache(tmp_path / "s.sqlite")
    seg = _seg()
    c.put_many([seg])
    c._conn().execute("UPDATE scores SET payload = x'00ff'")
    assert c.get_many("scorer-1", Side.PROMPT, [seg.text]) == {}


def test_null_cache_is_noop():
    c = ScoreCache(None)
    c.put_many([_seg()])
    assert c.get_many("scorer-1", Side.PROMPT, ["héllo"]) == {}


def test_unknown_format_rejected():
    d = segment_to_dict(_seg())
    d["v"] = 99
    with pytest.raises(ValueError):
        segment_from_dict(d, "héllo")
