"""JSON on the request path (guardrail/jsonio.py): orjson, with the standard library for what orjson refuses."""

import json
import math

import pytest

from guardrail.jsonio import dumps, loads


def test_documents_orjson_refuses_read_as_the_standard_library_reads_them():
    doc = loads(b'{"logprob": -Infinity, "x": NaN, "ok": [1, 2.5, "\\u00e9"]}')  # some servers write these
    assert doc["logprob"] == -math.inf and math.isnan(doc["x"]) and doc["ok"] == [1, 2.5, "\u00e9"]
    assert loads('{"caf\u00e9": 1}'.encode("utf-16")) == {"caf\u00e9": 1}  # a UTF-16 body (RFC 8259 allows it)
    assert loads(bytearray(b'{"a": 1}')) == {"a": 1} and loads('{"a": 1}') == {"a": 1}


def test_a_document_nobody_accepts_raises_the_standard_error():
    with pytest.raises(ValueError, match="Expecting"):
        loads(b'{"a": ')
    with pytest.raises(ValueError):
        loads(b"\xff\xfe\x00")


def test_integers_past_64_bits_are_read_exactly():
    """orjson would read them as floats, silently: such documents go to the standard library."""
    assert loads(b'{"seed": 123456789012345678901234567, "x": -9223372036854775809}') == {
        "seed": 123456789012345678901234567, "x": -9223372036854775809}
    assert loads('{"lp": -0.00012345678901234567}') == {"lp": -0.00012345678901234567}  # a float's digits
    # past 64 bits (orjson would give floats), as text, as bytes, as a memoryview, beside floats with long digit
    # runs and non-ASCII text
    doc = '{"lp": -0.00012345678901234567, "n": [1e5, 18446744073709551616, -9223372036854775809], "s": "caf\u00e9"}'
    want = {"lp": -0.00012345678901234567, "n": [1e5, 2**64, -(2**63) - 1], "s": "caf\u00e9"}
    for d in (doc, doc.encode(), memoryview(doc.encode())):
        got = loads(d)
        assert got == want and [type(x) for x in got["n"]] == [float, int, int]
    assert loads('{"s": "\ud800", "n": 18446744073709551616}') == {"s": "\ud800", "n": 2**64}  # a lone surrogate
    assert type(loads(b'{"n": 1234567890123456789.5}')["n"]) is float  # 19 digits, but a float


def test_written_compact_utf8_and_valid_json():
    import numpy as np

    out = dumps({"text": "caf\u00e9 \U0001f389", "p": 0.25, "n": None, 3: "key"})
    assert out == '{"text":"caf\u00e9 \U0001f389","p":0.25,"n":null,"3":"key"}'.encode()
    assert json.loads(dumps({"nan": math.nan, "inf": -math.inf})) == {"nan": None, "inf": None}  # never "NaN"
    assert json.loads(dumps({"f32": np.float32(1.5), "arr": np.arange(2)})) == {"f32": 1.5, "arr": [0, 1]}
    # what orjson cannot write goes to the standard library, by the same rules (NaN as null, valid JSON)
    odd = dumps({"big": 2**70, "nan": math.nan, "lone": "\ud800"})
    assert json.loads(odd) == {"big": 2**70, "nan": None, "lone": "\ud800"}
    with pytest.raises(TypeError):
        dumps({"s": {1}})


def test_a_backend_answer_with_non_standard_literals_is_read_not_a_502():
    """A server that writes -Infinity / NaN (the standard library's JSON, unpatched) still gives a scored answer:
    the -inf token is clamped, the NaN one missing (never a 0), for a completion and for a stream."""
    import asyncio

    import httpx

    from guardrail.backends.base import GenerationRequest
    from guardrail.backends.openai_http import OpenAIHTTPBackend
    from guardrail.types import Flag

    entries = ('[{"token": "Hi", "logprob": -0.5, "top_logprobs": []},'
               ' {"token": " there", "logprob": -Infinity, "top_logprobs": []},'
               ' {"token": "!", "logprob": NaN, "top_logprobs": []}]')
    body = ('{"id": "c", "object": "chat.completion", "model": "m", "choices": [{"index": 0, "message": {"role":'
            ' "assistant", "content": "Hi there!"}, "logprobs": {"content": ' + entries + '}, "finish_reason":'
            ' "stop"}], "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}}')
    chunks = [('data: {"id": "c", "object": "chat.completion.chunk", "model": "m", "choices": [{"index": 0, "delta":'
               ' {"content": "' + t + '"}, "logprobs": {"content": [{"token": "' + t + '", "logprob": ' + lp
               + ', "top_logprobs": []}]}, "finish_reason": ' + fin + '}]}\n\n')
              for t, lp, fin in (("Hi", "-0.5", "null"), (" there", "-Infinity", "null"), ("!", "NaN", '"stop"'))]

    def handler(request: httpx.Request) -> httpx.Response:
        if json.loads(request.content).get("stream"):
            return httpx.Response(200, text="".join(chunks) + "data: [DONE]\n\n",
                                  headers={"content-type": "text/event-stream"})
        return httpx.Response(200, text=body, headers={"content-type": "application/json"})

    async def go():
        b = OpenAIHTTPBackend("http://backend/v1", "m", client=httpx.AsyncClient(transport=httpx.MockTransport(handler)))
        req = GenerationRequest(messages=[{"role": "user", "content": "hello"}], max_tokens=3)
        gen = await b.generate(req)
        events = [ev async for ev in b.stream(req)]
        await b.aclose()
        return gen, [ev.token for ev in events if ev.token is not None]

    gen, streamed = asyncio.run(go())
    for toks in (gen.output.tokens, streamed):
        assert [t.logprob for t in toks] == [-0.5, None, None]
        assert Flag.CLAMPED in toks[1].flags and Flag.MISSING in toks[2].flags
    assert gen.output.text == "Hi there!"


def test_a_stream_chunk_with_invalid_utf8_is_read_with_replacement_characters():
    """A server that cuts a character between chunks (invalid UTF-8 in one chunk): read as a text reader would,
    with U+FFFD, not a 502."""
    import asyncio

    import httpx

    from guardrail.backends.base import GenerationRequest
    from guardrail.backends.openai_http import OpenAIHTTPBackend

    bad = (b'data: {"id": "c", "object": "chat.completion.chunk", "model": "m", "choices": [{"index": 0, "delta":'
           b' {"content": "caf\xc3"}, "finish_reason": null}]}\n\n')
    end = (b'data: {"id": "c", "object": "chat.completion.chunk", "model": "m", "choices": [{"index": 0, "delta":'
           b' {"content": "!"}, "finish_reason": "stop"}]}\n\ndata: [DONE]\n\n')

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=bad + end, headers={"content-type": "text/event-stream"})

    async def go():
        b = OpenAIHTTPBackend("http://backend/v1", "m", client=httpx.AsyncClient(transport=httpx.MockTransport(handler)))
        req = GenerationRequest(messages=[{"role": "user", "content": "hello"}], max_tokens=3, logprobs=False)
        events = [ev async for ev in b.stream(req)]
        await b.aclose()
        return events

    events = asyncio.run(go())
    assert "".join(ev.text for ev in events) == "caf\ufffd!" and events[-1].finish_reason == "stop"
