"""The scripted backend: deterministic answers and faults, loud when the script runs out."""

import asyncio

import pytest

from guardrail.backends.base import Backend, GenerationRequest, TokenEvent
from guardrail.backends.scripted import ScriptedBackend, ScriptError
from guardrail.errors import BackendTimeoutError, BackendUnavailableError, UnscorableError
from guardrail.types import Generation, LogprobMode, Segment, Side, Token


def seg(text: str, lp: float = -1.0) -> Segment:
    toks = [Token(text, text.encode(), lp, None, 0, len(text))]
    return Segment(text, Side.TEXT, toks, "scripted", "script", "script", LogprobMode.RAW, "scripted:id")


def req() -> GenerationRequest:
    return GenerationRequest(messages=[{"role": "user", "content": "hi"}], max_tokens=4)


async def collect(agen):
    return [ev async for ev in agen]


def test_is_a_backend_and_answers_in_script_order():
    a, b = seg("a"), seg("b", -2.0)
    gen = Generation(output=seg("out"), finish_reason="stop", prompt_tokens=3)
    s = ScriptedBackend([a, b, gen])
    assert isinstance(s, Backend)
    assert asyncio.run(s.score_many(["x", "y"])) == [a, b]
    assert asyncio.run(s.generate(req())) is gen
    assert [c[0] for c in s.calls] == ["score", "score", "generate"] and s.remaining == 0


def test_runs_out_loudly():
    s = ScriptedBackend([seg("a")])
    asyncio.run(s.score("x"))
    with pytest.raises(ScriptError, match="script is empty"):
        asyncio.run(s.score("y"))


def test_wrong_kind_of_entry_is_an_error():
    s = ScriptedBackend([seg("a")])
    with pytest.raises(ScriptError, match="expected Generation"):
        asyncio.run(s.generate(req()))


@pytest.mark.parametrize("fault", [BackendTimeoutError("t"), BackendUnavailableError("u"), UnscorableError("n")])
def test_faults_are_raised_in_place(fault):
    s = ScriptedBackend([fault, seg("ok")])
    with pytest.raises(type(fault)):
        asyncio.run(s.score("x"))
    assert asyncio.run(s.score("x")).text == "ok"  # the next call gets the next entry


def test_stream_fault_mid_stream_after_the_tokens_before_it():
    t = Token("a", b"a", -0.5)
    events = [TokenEvent(index=0, token=t, text="a"), BackendUnavailableError("connection reset"),
              TokenEvent(index=1, token=t, text="a", finish_reason="stop")]
    s = ScriptedBackend([events])
    got = []

    async def consume():
        async for ev in s.stream(req()):
            got.append(ev)

    with pytest.raises(BackendUnavailableError):
        asyncio.run(consume())
    assert [ev.index for ev in got] == [0]


def test_callable_entries_see_the_argument_and_may_raise():
    def answer(text):
        if text == "bad":
            raise UnscorableError("no logprobs for this one")
        return seg(text.upper())

    s = ScriptedBackend([answer, answer])
    assert asyncio.run(s.score("abc")).text == "ABC"
    with pytest.raises(UnscorableError):
        asyncio.run(s.score("bad"))


def test_delay_lets_a_caller_time_out_and_aclose_is_recorded():
    s = ScriptedBackend([seg("late")], delay=5.0)

    async def go():
        return await asyncio.wait_for(s.score("x"), 0.05)

    with pytest.raises(TimeoutError):
        asyncio.run(go())
    asyncio.run(s.aclose())
    assert s.closed and s.calls == [("score", "x")]
