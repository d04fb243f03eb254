"""LiteLLMBackend against recorded real vLLM responses replayed through respx, and injected faults.

litellm's default aiohttp transport bypasses httpx mocks, so these tests switch it to httpx (the
``litellm_httpx`` fixture); the real-server tests (test_llamacpp_server.py, test_vllm_server.py) keep the
default."""

import asyncio
import json
import socket
from pathlib import Path

import httpx
import pytest
import respx

from guardrail.backends.base import Backend, GenerationRequest
from guardrail.backends.litellm import LiteLLMBackend
from guardrail.backends.openai_logprobs import Origin, chat_output_segment, prompt_segment
from guardrail.backends.scripted import ScriptedBackend
from guardrail.errors import (
    BackendHTTPError,
    BackendTimeoutError,
    BackendUnavailableError,
    LogprobLimitError,
    UnscorableError,
)
from guardrail.types import Flag, LogprobMode, Side

FIX = Path(__file__).parent / "fixtures" / "vllm"
BASE = "http://127.0.0.1:9/v1"
USER = "Name three primary colors."
ECHO_PROMPT = "The capital of France is Paris. The capital of Italy is"


def load(name: str):
    return json.loads((FIX / name).read_text(encoding="utf-8"))


@pytest.fixture
def litellm_httpx(monkeypatch):
    import litellm

    monkeypatch.setattr(litellm, "disable_aiohttp_transport", True)
    with respx.mock(assert_all_called=False) as router:
        yield router


def vllm(**kw) -> LiteLLMBackend:
    return LiteLLMBackend("hosted_vllm/smollm2-135m", api_base=BASE, **kw)


def req(**kw) -> GenerationRequest:
    return GenerationRequest(messages=[{"role": "user", "content": USER}], max_tokens=24, **kw)


def run(coro):
    return asyncio.run(coro)


async def collect(agen):
    return [ev async for ev in agen]


class Chunks(httpx.AsyncByteStream):
    """An SSE body sent in pieces, optionally stalling or failing after ``fail_after`` pieces."""

    def __init__(self, parts: list[bytes], fail_after: int | None = None, exc: Exception | None = None,
                 stall: float = 0.0):
        self.parts, self.fail_after, self.exc, self.stall = parts, fail_after, exc, stall

    async def __aiter__(self):
        for i, p in enumerate(self.parts):
            if self.fail_after is not None and i == self.fail_after:
                if self.stall:
                    await asyncio.sleep(self.stall)
                raise self.exc
            yield p


def sse_parts() -> list[bytes]:
    text = (FIX / "c_chat_logprobs_stream.sse").read_text(encoding="utf-8")
    return [(block + "\n\n").encode() for block in text.split("\n\n") if block.strip()]


# ------------------------------------------------------------------------------------------ replay
def test_generate_with_prompt_logprobs_sends_extra_body_and_separates_the_template(litellm_httpx):
    body = load("b_chat_logprobs_prompt_logprobs.json")
    route = litellm_httpx.post(f"{BASE}/chat/completions").mock(return_value=httpx.Response(200, json=body))
    b = vllm()
    gen = run(b.generate(req(score_prompt=True)))
    sent = json.loads(route.calls[0].request.content)
    assert sent["prompt_logprobs"] == 1 and sent["logprobs"] is True and sent["top_logprobs"] == 5
    assert sent["model"] == "smollm2-135m"
    origin = Origin.of(b.scorer)
    expect = chat_output_segment(body["choices"][0], origin)
    assert gen.output.text == expect.text and [t.logprob for t in gen.output.tokens] == [t.logprob for t in expect.tokens]
    assert gen.finish_reason == body["choices"][0]["finish_reason"]
    assert gen.prompt_tokens == body["usage"]["prompt_tokens"]
    assert gen.prompt is not None and gen.prompt.side is Side.PROMPT
    assert "".join(t.text for t in gen.prompt.tokens if t.scored) == USER
    assert gen.prompt.scorer_id == b.scorer.id and b.scorer.backend == "litellm"


def test_score_uses_completions_echo(litellm_httpx):
    body = load("d_completions_echo_max_tokens_1.json")
    route = litellm_httpx.post(f"{BASE}/completions").mock(return_value=httpx.Response(200, json=body))
    seg = run(vllm().score(ECHO_PROMPT))
    sent = json.loads(route.calls[0].request.content)
    assert sent["echo"] is True and sent["prompt"] == ECHO_PROMPT and sent["logprobs"] == 5
    assert seg.text == ECHO_PROMPT
    assert [t.logprob for t in seg.tokens][1:] == body["choices"][0]["logprobs"]["token_logprobs"][1:len(seg.tokens)]
    assert seg.tokens[-1].end == len(ECHO_PROMPT)


def test_score_many_scores_each_text(litellm_httpx):
    body = load("d_completions_echo_max_tokens_0.json")
    route = litellm_httpx.post(f"{BASE}/completions").mock(return_value=httpx.Response(200, json=body))
    segs = run(vllm().score_many([ECHO_PROMPT, ECHO_PROMPT]))
    assert len(segs) == 2 == len(route.calls)


def test_stream_replay_yields_token_events_with_finish_reason(litellm_httpx):
    litellm_httpx.post(f"{BASE}/chat/completions").mock(
        return_value=httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=Chunks(sse_parts())))
    events = run(collect(vllm().stream(req())))
    whole = load("a_chat_logprobs.json")["choices"][0]
    assert "".join(e.text for e in events) == whole["message"]["content"]
    assert [e.token.logprob for e in events if e.token] == [c["logprob"] for c in whole["logprobs"]["content"]]
    assert events[-1].finish_reason == "stop"


# ------------------------------------------------------------------------------------------ faults
@pytest.mark.parametrize("fixture", ["f_chat_top_logprobs_30_error.json", "f_chat_prompt_logprobs_30_error.json"])
def test_too_many_logprobs_400_is_a_limit_error(litellm_httpx, fixture):
    litellm_httpx.post(f"{BASE}/chat/completions").mock(return_value=httpx.Response(400, json=load(fixture)))
    b = vllm(max_top_k=None)  # no local check: the server's 400 is what is tested
    with pytest.raises(LogprobLimitError) as ei:
        run(b.generate(req(top_logprobs=20)))
    assert ei.value.status == 400 and "\n" not in str(ei.value)


def test_top_k_above_the_known_limit_fails_before_any_call(litellm_httpx):
    route = litellm_httpx.post(f"{BASE}/chat/completions")
    with pytest.raises(LogprobLimitError):
        run(vllm(max_top_k=3).generate(req(top_logprobs=5)))
    assert not route.called


@pytest.mark.parametrize("status", [500, 502, 503])
def test_5xx_is_an_http_error_with_status(litellm_httpx, status):
    litellm_httpx.post(f"{BASE}/chat/completions").mock(
        return_value=httpx.Response(status, json={"error": {"message": "engine dead", "code": status}}))
    with pytest.raises(BackendHTTPError) as ei:
        run(vllm().generate(req()))
    assert ei.value.status == status and not isinstance(ei.value, LogprobLimitError)


def test_timeout_is_backend_timeout(litellm_httpx):
    litellm_httpx.post(f"{BASE}/chat/completions").mock(side_effect=httpx.ReadTimeout("read timed out"))
    with pytest.raises(BackendTimeoutError):
        run(vllm(timeout=1.0).generate(req()))


def test_connection_refused_is_unavailable():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    b = LiteLLMBackend("hosted_vllm/smollm2-135m", api_base=f"http://127.0.0.1:{port}/v1", timeout=5)
    with pytest.raises(BackendUnavailableError):
        run(b.generate(req()))


def test_connection_reset_mid_stream_is_unavailable_after_the_tokens_so_far(litellm_httpx):
    parts = sse_parts()
    litellm_httpx.post(f"{BASE}/chat/completions").mock(return_value=httpx.Response(
        200, headers={"content-type": "text/event-stream"},
        stream=Chunks(parts, fail_after=6, exc=httpx.ReadError("connection reset by peer"))))
    got = []

    async def consume():
        async for ev in vllm().stream(req()):
            got.append(ev)

    with pytest.raises(BackendUnavailableError):
        run(consume())
    assert 0 < len(got) < 22 and all(e.finish_reason is None for e in got)


def test_stalled_stream_times_out(litellm_httpx):
    litellm_httpx.post(f"{BASE}/chat/completions").mock(return_value=httpx.Response(
        200, headers={"content-type": "text/event-stream"},
        stream=Chunks(sse_parts(), fail_after=4, exc=httpx.ReadError("never"), stall=30.0)))
    with pytest.raises(BackendTimeoutError):
        run(collect(vllm(chunk_timeout=0.3).stream(req())))


def test_no_logprobs_in_the_response_is_unscorable(litellm_httpx):
    body = load("a_chat_logprobs.json")
    body["choices"][0]["logprobs"] = None
    litellm_httpx.post(f"{BASE}/chat/completions").mock(return_value=httpx.Response(200, json=body))
    with pytest.raises(UnscorableError):
        run(vllm().generate(req()))


def test_no_logprobs_in_a_stream_is_unscorable(litellm_httpx):
    parts = [p for p in sse_parts()]
    stripped = []
    for p in parts:
        line = p.decode().strip()
        if line.startswith("data: {"):
            obj = json.loads(line[6:])
            for ch in obj.get("choices", []):
                ch["logprobs"] = None
            p = f"data: {json.dumps(obj)}\n\n".encode()
        stripped.append(p)
    litellm_httpx.post(f"{BASE}/chat/completions").mock(return_value=httpx.Response(
        200, headers={"content-type": "text/event-stream"}, stream=Chunks(stripped)))
    with pytest.raises(UnscorableError):
        run(collect(vllm().stream(req())))


def test_nan_and_clamped_values_become_flags(litellm_httpx):
    body = load("a_chat_logprobs.json")
    content = body["choices"][0]["logprobs"]["content"]
    content[1]["logprob"] = None
    content[2]["logprob"] = -9999.0
    litellm_httpx.post(f"{BASE}/chat/completions").mock(return_value=httpx.Response(200, json=body))
    gen = run(vllm().generate(req()))
    t = gen.output.tokens
    assert (t[1].logprob, t[2].logprob) == (None, None)
    assert Flag.MISSING in t[1].flags and Flag.CLAMPED in t[2].flags


# ------------------------------------------------------------------------------------------ providers
def test_openai_compatible_server_cannot_score_without_a_scorer():
    b = LiteLLMBackend("openai/smollm2", api_base=BASE)
    assert not b.capabilities.prompt_logprobs and b.capabilities.output_logprobs
    with pytest.raises(UnscorableError):
        run(b.score("some text"))


def test_separate_scorer_scores_text_and_prompt(litellm_httpx):
    body = load("a_chat_logprobs.json")
    seg = prompt_segment(load("b_chat_logprobs_prompt_logprobs.json")["prompt_logprobs"],
                         Origin("scripted", "m", "t", LogprobMode.RAW, "s"),
                         contents=[USER])
    scorer = ScriptedBackend([seg, seg])
    litellm_httpx.post(f"{BASE}/chat/completions").mock(return_value=httpx.Response(200, json=body))
    b = LiteLLMBackend("openai/smollm2", api_base=BASE, scorer=scorer)
    assert b.capabilities.prompt_logprobs and b.scorer.settings["prompt"] == "scorer:scripted"
    assert run(b.score("hello there")) is seg
    gen = run(b.generate(req(score_prompt=True)))
    assert gen.prompt is seg and scorer.calls == [("score", "hello there"), ("score", USER)]
    run(b.aclose())
    assert scorer.closed


def test_scorer_ids_differ_per_provider_and_model():
    a = LiteLLMBackend("hosted_vllm/m1", api_base=BASE)
    b = LiteLLMBackend("hosted_vllm/m2", api_base=BASE)
    c = LiteLLMBackend("openai/m1", api_base=BASE)
    assert len({a.scorer.id, b.scorer.id, c.scorer.id}) == 3
    assert isinstance(a, Backend) and isinstance(c, Backend)
    assert a.capabilities.logprob_mode.value == "raw_logprobs"


def test_openai_http_backend_scores_text_through_vllm_echo_only_when_told():
    """OpenAIHTTPBackend (the proxy's hot path) scores a prompt through a vLLM server's echo (the recorded real
    answer), with its k alternatives bounding each entropy; without echo_scoring it is unscorable, never a 0."""
    from guardrail.backends.openai_http import OpenAIHTTPBackend

    body = load("d_completions_echo_max_tokens_1.json")
    sent = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append((request.url.path, json.loads(request.content)))
        return httpx.Response(200, json=body)

    async def go(echo: bool):
        client = httpx.AsyncClient(transport=httpx.MockTransport(answer))
        b = OpenAIHTTPBackend(BASE, "smollm2-135m", client=client, echo_scoring=echo)
        try:
            assert b.capabilities.prompt_logprobs is echo
            return await b.score(ECHO_PROMPT, side=Side.PROMPT), b
        finally:
            await client.aclose()

    seg, b = run(go(True))
    path, req_body = sent[0]
    assert path == "/v1/completions" and req_body["echo"] is True and req_body["logprobs"] == 5
    assert req_body["prompt"] == ECHO_PROMPT and req_body["max_tokens"] == 1
    assert seg.text == ECHO_PROMPT and seg.side is Side.PROMPT and seg.scorer_id == b.scorer.id
    lps = body["choices"][0]["logprobs"]["token_logprobs"]
    assert [t.logprob for t in seg.tokens][1:] == lps[1:len(seg.tokens)] and seg.tokens[-1].end == len(ECHO_PROMPT)
    # k as asked, although one token lists 6 (the prompt token besides the top 5): a text-dependent k would be
    # refused by the baseline fitted with the other one
    assert sorted({len(t.top) for t in seg.tokens[1:]}) == [5, 6]
    assert seg.entropy_k == 5 and all(t.entropy is not None and t.entropy > 0 for t in seg.tokens[1:])
    with pytest.raises(UnscorableError):
        run(go(False))
    assert len(sent) == 1  # nothing was asked of a server that does not echo
