"""Stop strings: no part of one reaches the client.  The pure filter on scripted token texts (a stop string
spanning tokens, inside one token, straddling a token, a prefix that turns out not to be one, several stop
strings), then the real embedded model: streamed event texts and generate() give the same answer, cut before
the stop string, whatever tokens spelled it."""

from __future__ import annotations

import asyncio

import pytest

from guardrail.backends.base import GenerationRequest
from guardrail.backends.stops import StopFilter


def run_filter(pieces: list[str], stops: list[str]) -> tuple[list[str], list[int], StopFilter]:
    f, texts, idx = StopFilter(stops), [], []
    for i, p in enumerate(pieces):
        out = f.push(i, None, p)
        texts += [t for _, _, t in out]
        idx += [i for i, _, _ in out]
        if f.stopped_at is not None:
            return texts, idx, f
    out = f.flush()
    return texts + [t for _, _, t in out], idx + [i for i, _, _ in out], f


@pytest.mark.parametrize(("pieces", "stops", "answer"), [
    (["Hello", ",", " world", "\n", "\n", "More"], ["\n\n"], "Hello, world"),  # spans two tokens
    (["Hello", " STOP", " here"], ["STOP"], "Hello "),  # inside one token (straddling: cut there)
    (["a", "b", "c", "d"], ["bd"], "abcd"),  # "b" could start "bd": held, then released with "c"
    (["x", "\n", "y", "\n", "\n"], ["\n\n", "y\n"], "x\n"),  # the first stop string to complete wins
    (["no", " stop", " here"], [], "no stop here"),
    (["<", "|", "end", "|>"], ["<|end|>"], ""),  # the answer is empty: nothing was released
])
def test_the_filter_releases_the_answer_and_nothing_of_a_stop_string(pieces, stops, answer):
    texts, idx, f = run_filter(pieces, stops)
    assert "".join(texts) == answer
    assert idx == sorted(idx) and len(set(idx)) == len(idx)
    if f.stopped_at is not None:
        assert f.stopped_at == len(answer) and f.text[f.stopped_at:].startswith(tuple(stops))


def test_a_possible_stop_prefix_is_held_only_until_it_cannot_be_one():
    f = StopFilter(["bd"])
    assert [t for _, _, t in f.push(0, None, "a")] == ["a"]
    assert f.push(1, None, "b") == []  # "b" may start "bd"
    assert [t for _, _, t in f.push(2, None, "c")] == ["b", "c"]


def test_nothing_can_follow_a_stop():
    f = StopFilter(["!"])
    f.push(0, None, "hi!")
    with pytest.raises(RuntimeError):
        f.push(1, None, "more")


def _greedy(backend, stop=()):
    req = GenerationRequest(messages=[{"role": "user", "content": "List three colours, one per line."}],
                            max_tokens=40, temperature=0, stop=list(stop))

    async def both():
        events = [ev async for ev in backend.stream(req)]
        return events, await backend.generate(req)

    return asyncio.run(both())


@pytest.mark.slow
def test_the_embedded_model_never_streams_a_stop_string(backend):
    events, gen = _greedy(backend)
    full = gen.output.text
    toks = [e for e in events if e.token is not None and e.text]
    assert len(toks) >= 6, full
    # a stop string spanning two tokens: the last character of token 3 and the first of token 4
    a, b = toks[3].text, toks[4].text
    spanning = a[-1] + b[0]
    cut = full.index(spanning)
    # and one inside a token: the middle of token 5's text (when it has 3 or more characters), else all of it
    inner = toks[5].text[1:-1] if len(toks[5].text) >= 3 else toks[5].text
    for stop in (spanning, inner):
        ev2, gen2 = _greedy(backend, [stop])
        streamed = "".join(e.text for e in ev2)
        want = full[: full.index(stop)]
        assert streamed == want == gen2.output.text, (stop, streamed, gen2.output.text)
        assert gen2.finish_reason == "stop" and ev2[-1].finish_reason == "stop"
        assert all(stop not in e.text for e in ev2)
        # the judged segment's tokens spell the answer (none of the stop string's)
        assert "".join(gen2.output.text[t.start:t.end] for t in gen2.output.tokens) == gen2.output.text
    assert cut >= 0
    # a stop string that never completes changes nothing
    ev3, gen3 = _greedy(backend, [full[:3] + "\u2603"])
    assert "".join(e.text for e in ev3) == full == gen3.output.text
