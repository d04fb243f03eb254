"""The proxy in front of an OpenAI-compatible server over httpx (a recording server on 127.0.0.1): what the
guard does not read is forwarded unchanged (tools, content parts, response_format, vendor fields), what the
backend answers comes back (tool calls, system_fingerprint), tool-call arguments are judged as output, the
backend is asked for logprobs only when someone needs them, and its faults map to 502/504."""

from __future__ import annotations

import asyncio
import json
import time
from contextlib import asynccontextmanager

import httpx
import pytest
from guard_helpers import benign, embedded_scorer
from hypothesis import given, settings
from hypothesis import strategies as st
from proxy_helpers import running, sse_events
from recording_server import ANSWER, TOOL_CALL, RecordingServer, ThreadServer

from guardrail.backends.scripted import ScriptedBackend
from guardrail.proxy import ProxyConfig, create_app
from guardrail.proxy.config import ModelRoute
from guardrail.types import Side

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                           "parameters": {"type": "object", "properties": {
                                               "city": {"type": "string"}, "unit": {"type": "string"}}}}}]


def run(coro):
    return asyncio.run(coro)


@asynccontextmanager
async def proxy_to(url: str, scorer_script=(), timeout: float = 30.0, policy: str = "default"):
    scorer = ScriptedBackend(scorer_script, scorer=embedded_scorer())
    cfg = ProxyConfig(models={"rec": ModelRoute(backend="openai/rec-model", api_base=url, timeout_s=timeout,
                                                policy=policy)})
    async with running(create_app(cfg, scorer_factory=lambda: scorer)) as c:
        yield c, scorer


def test_tools_content_parts_and_vendor_fields_reach_the_backend_unchanged_and_tool_calls_come_back():
    messages = [
        {"role": "system", "content": "You are a weather bot."},
        {"role": "user", "content": [{"type": "text", "text": "What is the weather in Paris?"},
                                     {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}],
         "name": "alice"},
    ]
    sent = {"model": "rec", "messages": messages, "tools": TOOLS, "tool_choice": "auto",
            "response_format": {"type": "json_object"}, "top_k": 20, "repetition_penalty": 1.1,
            "logit_bias": {"42": -5}, "user": "u-1", "parallel_tool_calls": False, "max_tokens": 40,
            "temperature": 0.3, "guardrail": {"policy": "default"}}

    async def go():
        with RecordingServer() as rec:
            # prompt: the system and user texts are screened (the image part is forwarded, not screened);
            # output: the tool call (name and arguments) is teacher-forced by the embedded scorer
            async with proxy_to(rec.base_url, [benign(seed=1), benign(30, seed=2, side=Side.OUTPUT)]) as (c, sc):
                r = await c.post("/v1/chat/completions", json=sent)
                assert r.status_code == 200, r.text
                body = r.json()
                got = rec.requests[0]
                for k in ("messages", "tools", "tool_choice", "response_format", "top_k", "repetition_penalty",
                          "logit_bias", "user", "parallel_tool_calls", "max_tokens", "temperature"):
                    assert got[k] == sent[k], k
                assert got["model"] == "rec-model" and "guardrail" not in got
                assert "logprobs" not in got  # the embedded scorer judges: nobody needed the backend's
                msg = body["choices"][0]["message"]
                assert msg["tool_calls"] == [TOOL_CALL] and msg["content"] is None
                assert body["choices"][0]["finish_reason"] == "tool_calls" and body["system_fingerprint"] == "fp_rec"
                g = body["guardrail"]
                assert g["scorers"] == {"prompt": "embedded", "output": "embedded"}
                assert g["attempts"][0]["output"]["p_value"] is not None
                replies = [arg for name, arg in sc.calls if name == "score_reply"]
                assert replies[0][1] == f"get_weather({TOOL_CALL['function']['arguments']})"  # the call was judged
                assert [name for name, _ in sc.calls] == ["score", "score_reply"]
                assert body["usage"]["completion_tokens"] == 6 and body["usage"]["prompt_tokens"] == 11
    run(go())


def test_logprobs_are_asked_for_only_when_the_client_wants_them_and_returned_trimmed():
    async def go():
        with RecordingServer() as rec:
            script = [benign(seed=3), benign(30, seed=4, side=Side.OUTPUT)]
            async with proxy_to(rec.base_url, script) as (c, _sc):
                r = await c.post("/v1/chat/completions", json={
                    "model": "rec", "messages": [{"role": "user", "content": "capital of France?"}],
                    "logprobs": True, "top_logprobs": 2, "max_tokens": 20})
                assert r.status_code == 200, r.text
                got = rec.requests[0]
                assert got["logprobs"] is True and got["top_logprobs"] == 2
                content = r.json()["choices"][0]["logprobs"]["content"]
                assert "".join(e["token"] for e in content) == ANSWER == r.json()["choices"][0]["message"]["content"]
    run(go())


def test_stream_passes_through_and_is_judged_at_its_end():
    async def go():
        with RecordingServer() as rec:
            script = [benign(seed=5), benign(30, seed=6, side=Side.OUTPUT)]
            async with proxy_to(rec.base_url, script) as (c, _sc):
                r = await c.post("/v1/chat/completions", json={
                    "model": "rec", "stream": True, "stream_options": {"include_usage": True},
                    "messages": [{"role": "user", "content": "capital of France?"}], "vendor_flag": "x"})
                assert r.status_code == 200, r.text
                ev = sse_events(r.text)
                text = "".join(ch["choices"][0]["delta"].get("content") or "" for ch in ev[:-1] if ch["choices"])
                assert text == ANSWER and ev[-1] == "[DONE]"
                g = ev[-2]["guardrail"]
                assert g["action"] in ("allow", "annotate") and g["stream"] is None  # no own-logprob checkpoints
                assert g["attempts"][0]["output"]["p_value"] is not None
                assert ev[-2]["usage"]["prompt_tokens"] == 11
                got = rec.requests[0]
                assert got["stream"] is True and got["vendor_flag"] == "x" and "logprobs" not in got
    run(go())


def test_a_streamed_tool_call_comes_back_as_tool_call_deltas_and_its_arguments_are_judged():
    async def go():
        with RecordingServer() as rec:
            script = [benign(seed=7), benign(30, seed=8, side=Side.OUTPUT)]
            async with proxy_to(rec.base_url, script) as (c, sc):
                r = await c.post("/v1/chat/completions", json={
                    "model": "rec", "stream": True, "tools": TOOLS, "tool_choice": "auto",
                    "messages": [{"role": "user", "content": "What is the weather in Paris?"}]})
                assert r.status_code == 200, r.text
                ev = sse_events(r.text)
                chunks = [ch for ch in ev[:-1] if ch["choices"]]
                assert all(not ch["choices"][0]["delta"].get("content") for ch in chunks)  # no markup as content
                deltas = [d for ch in chunks for d in ch["choices"][0]["delta"].get("tool_calls") or ()]
                assert deltas[0]["id"] == TOOL_CALL["id"] and deltas[0]["function"]["name"] == "get_weather"
                assert "".join(d["function"].get("arguments") or "" for d in deltas) == \
                    TOOL_CALL["function"]["arguments"]
                assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
                g = ev[-2]["guardrail"]
                assert g["action"] in ("allow", "annotate") and g["attempts"][0]["text"] == ""
                # the embedded scorer teacher-forced the merged call, name and arguments, as for a non-streamed one
                assert sc.calls[-1][0] == "score_reply"
                assert sc.calls[-1][1][-1] == f"get_weather({TOOL_CALL['function']['arguments']})"
                assert rec.requests[0]["tools"] == TOOLS and rec.requests[0]["stream"] is True
    run(go())


def test_legacy_functions_with_stream_is_refused_naming_the_field():
    async def go():
        with RecordingServer() as rec:
            async with proxy_to(rec.base_url) as (c, _sc):
                r = await c.post("/v1/chat/completions", json={
                    "model": "rec", "stream": True, "functions": [TOOLS[0]["function"]],
                    "messages": [{"role": "user", "content": "hi"}]})
                assert r.status_code == 400 and r.json()["error"]["param"] == "functions"
                assert rec.requests == []
    run(go())


@pytest.mark.parametrize(("answer", "status", "code"), [
    ({"status": 500, "json": {"error": {"message": "CUDA out of memory"}}}, 502, "backend_error"),
    ({"status": 400, "json": {"error": {"message": "max_tokens is too large"}}}, 400, "backend_rejected"),
    ({"status": 429, "json": {"error": {"message": "slow down"}}, "headers": {"retry-after": "7"}}, 429,
     "backend_busy"),
    ({"status": 200, "text": "<html>oops</html>"}, 502, "backend_error"),
])
def test_backend_http_faults_map_to_openai_errors(answer, status, code):
    def handler(request: httpx.Request) -> httpx.Response:
        if "json" in answer:
            return httpx.Response(answer["status"], json=answer["json"], headers=answer.get("headers"))
        return httpx.Response(answer["status"], text=answer["text"])

    async def go():
        from guardrail.backends.openai_http import OpenAIHTTPBackend

        scorer = ScriptedBackend([benign(seed=7)], scorer=embedded_scorer())
        backend = OpenAIHTTPBackend("http://backend/v1", "m", client=httpx.AsyncClient(
            transport=httpx.MockTransport(handler)))
        app = create_app(ProxyConfig(models={"m": ModelRoute()}), backends={"m": backend},
                         scorer_factory=lambda: scorer)
        async with running(app) as c:
            r = await c.post("/v1/chat/completions", json={"model": "m", "messages": [
                {"role": "user", "content": "hello there"}]})
            assert r.status_code == status, r.text
            assert r.json()["error"]["code"] == code
            if status == 429:
                assert r.headers["retry-after"] == "7"
    run(go())


def test_unreachable_backend_is_502_and_a_stalled_stream_ends_with_an_error_event():
    async def go():
        async with proxy_to("http://127.0.0.1:9/v1", [benign(seed=8)]) as (c, _sc):
            r = await c.post("/v1/chat/completions", json={"model": "rec", "messages": [
                {"role": "user", "content": "hello"}]})
            assert r.status_code == 502 and r.json()["error"]["code"] == "backend_error"
        with RecordingServer(chunk_delay=1.0) as rec:
            async with proxy_to(rec.base_url, [benign(seed=9)], timeout=0.3) as (c, _sc):
                r = await c.post("/v1/chat/completions", json={"model": "rec", "stream": True, "messages": [
                    {"role": "user", "content": "hello"}]})
                ev = sse_events(r.text)
                assert r.status_code == 200 and "error" in ev[-2] and "in time" in ev[-2]["error"]["message"]
    run(go())


def test_client_gone_mid_stream_cancels_the_backend_request():
    # real HTTP on both sides (httpx's in-process transport buffers whole bodies and never disconnects)
    with RecordingServer(chunk_delay=0.2) as rec:
        scorer = ScriptedBackend([benign(seed=10)], scorer=embedded_scorer())
        cfg = ProxyConfig(models={"rec": ModelRoute(backend="openai/rec-model", api_base=rec.base_url)})
        with ThreadServer(create_app(cfg, scorer_factory=lambda: scorer)) as px:
            deadline = time.monotonic() + 20
            while httpx.get(f"http://127.0.0.1:{px.port}/readyz").status_code != 200:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            with httpx.Client(timeout=30) as c, c.stream("POST", f"http://127.0.0.1:{px.port}/v1/chat/completions", json={
                    "model": "rec", "stream": True, "x_answer": "word " * 40,
                    "messages": [{"role": "user", "content": "count"}]}) as r:
                for line in r.iter_lines():
                    if '"content":"word' in line:
                        break  # hang up after the first word
            for _ in range(100):
                if rec.disconnects:
                    break
                time.sleep(0.05)
            assert rec.disconnects == 1  # the proxy closed its request to the backend
            assert len(rec.requests) == 1


def test_passthrough_json_reaches_the_backend_bytes_for_bytes_equal_as_json():
    # unicode, nesting, numbers: what arrives parses to what was sent
    odd = {"model": "rec", "messages": [{"role": "user", "content": "naïve café 😀 \u2028"}],
           "metadata": {"a": [1, 2.5, None, {"b": True}]}, "x_vendor": {"nested": ["ü", 1e-9]}}

    async def go():
        with RecordingServer() as rec:
            async with proxy_to(rec.base_url, [benign(seed=11), benign(30, seed=12, side=Side.OUTPUT)]) as (c, _sc):
                r = await c.post("/v1/chat/completions", content=json.dumps(odd).encode())
                assert r.status_code == 200, r.text
                got = rec.requests[0]
                assert got["messages"] == odd["messages"] and got["metadata"] == odd["metadata"]
                assert got["x_vendor"] == odd["x_vendor"]
    run(go())


def test_text_completions_go_to_the_servers_completions_route():
    async def go():
        with RecordingServer() as rec:
            async with proxy_to(rec.base_url, [benign(seed=20), benign(5, seed=21, side=Side.OUTPUT)]) as (c, _sc):
                r = await c.post("/v1/completions", json={"model": "rec", "prompt": "The capital of France is",
                                                          "max_tokens": 5, "top_k": 3})
                assert r.status_code == 200, r.text
                assert r.json()["choices"][0]["text"] == " Paris." and r.json()["object"] == "text_completion"
                got = rec.requests[0]
                assert got["prompt"] == "The capital of France is" and got["top_k"] == 3 and "messages" not in got
                assert r.json()["usage"]["prompt_tokens"] == 5
    run(go())


def test_streamed_tool_call_tokens_with_logprobs_are_scored_but_never_released_as_content():
    """With logprobs on (a serving-model baseline, or the client asked), the tokens of a tool call carry
    logprobs: they are assessed, but the client gets the tool-call deltas, not the model's markup as text."""
    from guardrail.backends.base import GenerationRequest, Message
    from guardrail.backends.openai_http import OpenAIHTTPBackend
    from guardrail.guard.streaming import merge_tool_calls

    async def go():
        with RecordingServer() as rec:
            be = OpenAIHTTPBackend(rec.base_url, "rec-model")
            req = GenerationRequest(messages=[Message(role="user", content="weather?")], max_tokens=40, logprobs=True,
                                    extra={"tools": TOOLS})
            events = [ev async for ev in be.stream(req)]
            await be.aclose()
        scored = [e for e in events if e.token is not None]
        assert scored and all(e.tool_calls is not None for e in scored)  # every token belongs to the tool call
        assert "".join(e.token.text for e in scored) == TOOL_CALL["function"]["arguments"]
        assert merge_tool_calls(events) == [TOOL_CALL]
        assert events[-1].finish_reason == "tool_calls"
    run(go())


def test_streams_reuse_the_backend_connection():
    """A stream read to ``[DONE]`` is read on to the end of its body, so the connection goes back to the pool: the
    next stream (and request) reuses it instead of opening a new one -- with TLS to a remote server, a handshake
    per stream (a stream left half read is closed by httpx, not reused)."""
    from guardrail.backends.base import GenerationRequest, Message
    from guardrail.backends.openai_http import OpenAIHTTPBackend

    async def go():
        with RecordingServer() as rec:
            be = OpenAIHTTPBackend(rec.base_url, "rec-model")
            req = GenerationRequest(messages=[Message(role="user", content="capital?")], max_tokens=40, logprobs=True)
            texts = []
            for _ in range(3):
                events = [ev async for ev in be.stream(req)]
                texts.append("".join(e.text for e in events))
            await be.generate(req)
            await be.aclose()
        assert texts == [ANSWER] * 3
        assert len(rec.clients) == 4 and len(set(rec.clients)) == 1, rec.clients  # one connection for all four
    run(go())


def test_a_server_that_keeps_the_body_open_after_done_does_not_hold_the_stream(monkeypatch):
    """After ``[DONE]`` the rest of the body is read for at most ``_TAIL_READ_S``: a server that never ends it
    delays the stream's end by that long, the stream ends with all its tokens, and the next stream works."""
    from guardrail.backends import openai_http
    from guardrail.backends.base import GenerationRequest, Message

    monkeypatch.setattr(openai_http, "_TAIL_READ_S", 0.2)
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [
        {"index": 0, "delta": {"content": "Hi"}, "finish_reason": "stop",
         "logprobs": {"content": [{"token": "Hi", "logprob": -0.1, "bytes": [72, 105], "top_logprobs": []}]}}]}

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode(),
                    "more_body": True})
        await asyncio.sleep(30)  # never ends the body in time
        await send({"type": "http.response.body", "body": b""})

    async def go():
        with ThreadServer(app) as srv:
            be = openai_http.OpenAIHTTPBackend(srv.base_url, "m")
            req = GenerationRequest(messages=[Message(role="user", content="hi")], max_tokens=4, logprobs=True)
            try:
                for _ in range(2):
                    t = time.monotonic()
                    events = [ev async for ev in be.stream(req)]
                    took = time.monotonic() - t
                    assert "".join(e.text for e in events) == "Hi" and events[-1].finish_reason == "stop"
                    assert 0.2 <= took < 3
            finally:
                await be.aclose()
                srv.server.force_exit = True
    run(go())


@settings(max_examples=300, deadline=None)
@given(events=st.lists(st.tuples(st.sampled_from(["data", "data ", "event", ": comment", "id"]),
                                 st.text(alphabet="ab{}\" :é\u2028\u2029\x85\x0c\x0b\x1c", max_size=12)), max_size=8),
       eol=st.sampled_from(["\n", "\r\n", "\r"]), cuts=st.lists(st.integers(0, 400), max_size=6),
       trailing=st.booleans())
def test_sse_data_lines_survive_any_split_of_the_body(events, eol, cuts, trailing):
    """sse_data gives the stripped payloads of the data: lines of an SSE body however the network splits it
    (line endings \\n, \\r\\n or \\r, a \\r\\n itself split; comments, other fields, blank lines skipped; a last
    line without its end still read; U+2028, U+0085, form feeds inside a payload are not line ends, as JSON
    allows them unescaped) -- the reference reads the whole body at once."""
    from guardrail.backends.openai_http import sse_data

    body = "".join(f"{k}:{v}{eol}" if k in ("data", "event", "id") else
                   (f"data: {v}{eol}" if k == "data " else f"{k}{eol}") for k, v in events)
    body += eol if events else ""
    if not trailing and body:
        body = body[: -len(eol)]
    raw = body.encode()
    want = [line[5:].strip() for line in raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
            if line.startswith(b"data:")]
    points = sorted({min(c, len(raw)) for c in cuts})
    pieces = [raw[a:b] for a, b in zip([0, *points], [*points, len(raw)], strict=True)]

    async def gen():
        for p in pieces:
            yield p

    async def collect():
        return [d async for d in sse_data(gen())]

    assert asyncio.run(collect()) == want
