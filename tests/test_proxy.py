"""The proxy in-process (httpx.ASGITransport) with a scripted backend: routes, the report in body and headers,
policy and domain choice, OpenAI-style errors with the right status for bad input, auth, limits and backend
faults, the SSE stream, logprobs for the client, metrics."""

from __future__ import annotations

import asyncio
import math
import re

import numpy as np
import pytest
from guard_helpers import benign, generation, gibberish_suffix, segment, word_salad
from proxy_helpers import MODEL, config, proxy, sse_events, user

from guardrail.backends.base import TokenEvent
from guardrail.errors import (
    BackendBusyError,
    BackendHTTPError,
    BackendTimeoutError,
    BackendUnavailableError,
)
from guardrail.proxy.chat_request import CompletionRequest
from guardrail.proxy.config import ApiKey, Limits, hash_key
from guardrail.proxy.responses import legacy_logprobs
from guardrail.types import Side


def run(coro):
    return asyncio.run(coro)


def chat(messages=None, **kw) -> dict:
    """A request (at temperature 0.7 unless told: the synthetic outputs are typical of that regime)."""
    return {"model": MODEL, "messages": messages or user(), "max_tokens": 32, "temperature": 0.7, **kw}


def assert_openai_error(r, status: int, code: str | None = None, param: str | None = None) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if code is not None:
        assert err["code"] == code
    if param is not None:
        assert err["param"] == param
    return err


def test_benign_chat_passes_with_report_in_body_and_headers():
    async def go():
        cfg = config(route={"default_temperature": 0.7})
        async with proxy([benign(), generation(benign(40, seed=3))], cfg) as (c, be, _):
            body = chat()
            del body["temperature"]  # the route's default applies
            r = await c.post("/v1/chat/completions", json=body, headers={"x-request-id": "req-42"})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["object"] == "chat.completion" and body["model"] == MODEL
            assert body["choices"][0]["message"]["content"].startswith("the river")
            assert body["choices"][0]["logprobs"] is None  # not asked for: the guard's own are not leaked
            g = body["guardrail"]
            assert g["request_id"] == "req-42" and g["policy"] == "default" and g["action"] in ("allow", "annotate")
            assert g["prompt"]["p_value"] > 0.01 and len(g["attempts"]) == 1
            assert body["usage"] == g["usage"] and g["usage"]["completion_tokens"] == 40
            assert r.headers["x-request-id"] == "req-42"
            assert r.headers["x-guardrail-action"] == g["action"]
            assert r.headers["x-guardrail-policy"] == "default"
            assert float(r.headers["x-guardrail-overhead-ms"]) >= 0
            req = be.calls[1][1]
            assert req.max_tokens == 32 and req.temperature == 0.7 and req.top_logprobs == 0
    run(go())


def test_gcg_suffix_is_rejected_before_generation_as_openai_error():
    async def go():
        async with proxy([gibberish_suffix()]) as (c, be, _):
            r = await c.post("/v1/chat/completions", json=chat())
            err = assert_openai_error(r, 400, "guardrail_rejected")
            assert "p=" in err["message"]  # the reason, with the p-value
            g = r.json()["guardrail"]
            assert g["action"] == "reject" and g["attempts"] == [] and g["prompt"]["action"] == "reject"
            assert g["prompt"]["verdicts"][0]["spans"], "the flagged span is reported"
            assert r.headers["x-guardrail-action"] == "reject"
            assert [k for k, _ in be.calls] == ["score"]  # nothing generated
    run(go())


def test_word_salad_output_is_regenerated_and_usage_sums_attempts():
    async def go():
        script = [benign(), generation(word_salad()), generation(benign(30, seed=5))]
        async with proxy(script) as (c, be, _):
            r = await c.post("/v1/chat/completions", json=chat(temperature=1.5))
            assert r.status_code == 200, r.text
            g = r.json()["guardrail"]
            assert g["regenerated"] == 1 and len(g["attempts"]) == 2
            assert g["attempts"][0]["action"] == "regenerate"
            assert r.json()["usage"]["completion_tokens"] == 60 + 30
            assert be.calls[2][1].temperature < 1.5  # the ladder's next rung
    run(go())


def test_policy_chosen_by_header_or_body_field_only_among_allowed():
    async def go():
        async with proxy([benign(), generation(benign(40, seed=3)), benign(seed=4), generation(benign(40))]) as (
                c, be, _):
            r = await c.post("/v1/chat/completions", json=chat(), headers={"x-guardrail-policy": "strict"})
            assert r.status_code == 200 and r.json()["guardrail"]["policy"] == "strict"
            r = await c.post("/v1/chat/completions", json=chat(guardrail={"policy": "shadow"}))
            assert r.status_code == 200 and r.json()["guardrail"]["policy"] == "shadow"
            assert "guardrail" not in be.calls[-1][1].model_dump()  # the choice is not forwarded
            r = await c.post("/v1/chat/completions", json=chat(), headers={"x-guardrail-policy": "agent-self-check"})
            assert_openai_error(r, 400, "policy_not_allowed", "guardrail.policy")
            r = await c.post("/v1/chat/completions", json=chat(guardrail={"polcy": "x"}))
            assert_openai_error(r, 400, param="guardrail.polcy")
    run(go())


DOMAIN_POLICY = """name: per-domain
prompt:
  tiers: [{p: 0.01, action: reject}]
output:
  tiers: [{p: 0.01, action: annotate}]
"""


def test_domain_chosen_per_request_among_allowed(tmp_path):
    pol = tmp_path / "per-domain.yaml"
    pol.write_text(DOMAIN_POLICY)

    async def go():
        cfg = config(route={"policy": str(pol), "policies": [], "domains": ["general_wiki", "code_python"]})
        async with proxy([benign(), generation(benign(40, seed=3))], cfg) as (c, _be, _):
            r = await c.post("/v1/chat/completions", json=chat(), headers={"x-guardrail-domain": "general_wiki"})
            g = r.json()["guardrail"]
            assert r.status_code == 200 and g["policy"] == "per-domain"
            assert g["baselines"]["prompt"].startswith("general_wiki/")
            r = await c.post("/v1/chat/completions", json=chat(guardrail={"domain": "legal_contracts"}))
            assert_openai_error(r, 400, "domain_not_allowed", "guardrail.domain")
    run(go())


def test_a_policy_tier_below_a_domain_baselines_resolution_stops_start_up_with_file_and_line():
    async def go():
        cfg = config(route={"domains": ["general_wiki"]})
        async with proxy((), cfg, wait_ready=False) as (c, _be, app):
            await app.state.loaded.wait()
            err = assert_openai_error(await c.get("/readyz"), 503, "not_ready")
            assert "default.yaml:" in err["message"] and "below the resolution" in err["message"]
    run(go())


@pytest.mark.parametrize(("body", "status", "code", "param"), [
    (b"", 400, "invalid_json", None),
    (b"{not json", 400, "invalid_json", None),
    (b"[1, 2]", 400, "invalid_json", None),
    ({"messages": [{"role": "user", "content": "x"}]}, 400, None, "model"),
    ({"model": MODEL}, 400, None, "messages"),
    ({"model": MODEL, "messages": []}, 400, None, "messages"),
    ({"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]}, 404, "model_not_found", "model"),
    (chat(temperature=3), 400, None, "temperature"),
    (chat(max_tokens=0), 400, None, "max_tokens"),
    (chat(max_tokens=100_000), 400, "max_tokens_over_limit", "max_tokens"),
    (chat(tools=[{"type": "function", "function": {"name": "f"}}]), 400, "unsupported_parameter", "tools"),
    (chat(response_format={"type": "json_object"}), 400, "unsupported_parameter", "response_format"),
    (chat(n=2), 400, "unsupported_parameter", "n"),
    (chat(logit_bias={"1": 5}), 400, "unsupported_parameter", "logit_bias"),
    (chat(vendor_thing=1), 400, "unsupported_parameter", "vendor_thing"),
    (chat(top_logprobs=3), 400, None, "top_logprobs"),
    (chat(stop=["a", "b", "c", "d", "e"]), 400, None, "stop"),
    (chat([{"role": "wizard", "content": "x"}]), 400, None, "messages[0].role"),
    (chat([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]), 400,
     "unsupported_content", "messages[0].content[0]"),
    (chat([{"role": "user", "content": 5}]), 400, None, "messages[0].content"),
    (chat([{"role": "user", "content": "x" * 40_000}]), 400, "prompt_too_long", "messages"),
])
def test_bad_requests_get_openai_errors_with_the_right_status(body, status, code, param):
    async def go():
        async with proxy() as (c, be, _):
            kw = {"content": body} if isinstance(body, bytes) else {"json": body}
            r = await c.post("/v1/chat/completions", **kw)
            assert_openai_error(r, status, code, param)
            assert be.calls == []  # nothing reached the backend
    run(go())


def test_neutral_values_and_text_parts_are_accepted():
    async def go():
        async with proxy([benign(), generation(benign(40, seed=3))]) as (c, be, _):
            msgs = [{"role": "system", "content": "be brief"},
                    {"role": "user", "content": [{"type": "text", "text": "part one"}, {"type": "text", "text": "two"}]}]
            r = await c.post("/v1/chat/completions", json=chat(msgs, n=1, presence_penalty=0, user="u1",
                                                               response_format={"type": "text"}, metadata={"a": "b"},
                                                               max_completion_tokens=20, stop="END", seed=7))
            assert r.status_code == 200, r.text
            req = be.calls[1][1]
            assert req.messages[1].content == "part one\ntwo" and req.max_tokens == 20 and req.stop == ["END"]
            assert req.seed == 7
    run(go())


def test_body_over_the_limit_is_413():
    async def go():
        cfg = config(limits=Limits(max_body_bytes=2048))
        async with proxy((), cfg) as (c, _be, _):
            r = await c.post("/v1/chat/completions", json=chat(user("x" * 5000)))
            assert_openai_error(r, 413, "request_too_large")
    run(go())


def test_auth_401_403_and_rate_limit_429():
    good, other = "gr-good-key-abcdefghijklmnop", "gr-other-key-abcdefghijklmnop"
    cfg = config(keys=[ApiKey(name="app", sha256=hash_key(good), rate_per_minute=2),
                       ApiKey(name="ro", sha256=hash_key(other), models=["elsewhere"])])

    async def go():
        script = [benign(), generation(benign(40, seed=3)), benign(seed=9), generation(benign(40, seed=4))]
        async with proxy(script, cfg) as (c, _be, _):
            assert_openai_error(await c.post("/v1/chat/completions", json=chat()), 401, "missing_api_key")
            r = await c.post("/v1/chat/completions", json=chat(), headers={"authorization": "Bearer nope"})
            assert_openai_error(r, 401, "invalid_api_key")
            r = await c.post("/v1/chat/completions", json=chat(), headers={"authorization": f"Bearer {other}"})
            assert_openai_error(r, 403, "forbidden")
            assert (await c.get("/v1/models", headers={"authorization": f"Bearer {other}"})).json()["data"] == []
            ok = {"authorization": f"Bearer {good}"}
            for _ in range(2):
                assert (await c.post("/v1/chat/completions", json=chat(), headers=ok)).status_code == 200
            r = await c.post("/v1/chat/completions", json=chat(), headers=ok)
            assert_openai_error(r, 429, "rate_limit_exceeded")
            assert int(r.headers["retry-after"]) >= 1
            assert [m["id"] for m in (await c.get("/v1/models", headers=ok)).json()["data"]] == [MODEL]
    run(go())


@pytest.mark.parametrize(("fault", "status", "code"), [
    (BackendTimeoutError("no answer in 5 s"), 504, "backend_timeout"),
    (BackendUnavailableError("connection refused"), 502, "backend_error"),
    (BackendHTTPError("upstream 500", status=500), 502, "backend_error"),
    (BackendHTTPError("upstream 400: bad", status=400), 400, "backend_rejected"),
    (BackendBusyError("queue full", retry_after=3), 429, "backend_busy"),
])
def test_backend_faults_map_to_their_status_never_500(fault, status, code):
    async def go():
        async with proxy([benign(), fault]) as (c, _be, _):
            r = await c.post("/v1/chat/completions", json=chat())
            assert_openai_error(r, status, code)
            if status == 429:
                assert r.headers["retry-after"] == "3"
    run(go())


def test_unscorable_output_follows_the_fail_mode_not_a_zero_score():
    async def go():
        missing = segment([math.nan] * 30, [math.nan] * 30, Side.OUTPUT)
        missing.tokens = [t.__class__(t.text, t.bytes, None, None, t.start, t.end) for t in missing.tokens]
        async with proxy([benign(), generation(missing)]) as (c, _be, _):
            r = await c.post("/v1/chat/completions", json=chat())
            assert r.status_code == 200, r.text
            out = r.json()["guardrail"]["attempts"][0]["output"]
            assert out["verdicts"][0]["scorable"] is False and out["p_value"] is None
            assert "unscorable: open" in (out["fail_mode"] or "")
    run(go())


def test_not_ready_is_503_and_readyz_says_why():
    async def go():
        cfg = config(route={"policy": "no-such-policy"})
        async with proxy((), cfg, wait_ready=False) as (c, _be, app):
            await app.state.loaded.wait()
            r = await c.get("/readyz")
            assert_openai_error(r, 503, "not_ready")
            assert "no-such-policy" in r.json()["error"]["message"]
            assert (await c.get("/healthz")).json() == {"status": "ok"}
            assert_openai_error(await c.post("/v1/chat/completions", json=chat()), 503, "not_ready")
    run(go())


def test_unknown_route_and_method_are_openai_errors():
    async def go():
        async with proxy() as (c, _be, _):
            assert_openai_error(await c.get("/v1/nothing"), 404, "unknown_url")
            assert_openai_error(await c.get("/v1/chat/completions"), 405, "method_not_allowed")
            assert (await c.get("/openapi.json")).json()["paths"]["/v1/chat/completions"]["post"]
    run(go())


def stream_of(seg, finish="stop") -> list[TokenEvent]:
    out = [TokenEvent(index=i, token=t, text=t.text) for i, t in enumerate(seg.tokens)]
    out[-1].finish_reason, out[-1].prompt_tokens = finish, 12
    return out


def typical(n: int, seed: int = 3):
    rng = np.random.default_rng(seed)
    return segment(list(rng.gamma(1.2, 0.9, n)), list(rng.uniform(1.0, 2.5, n)), Side.OUTPUT)


def test_stream_releases_assessed_text_then_the_report_then_done():
    async def go():
        seg = typical(25)
        async with proxy([benign(), stream_of(seg)]) as (c, be, app):
            r = await c.post("/v1/chat/completions", json=chat(stream=True, stream_options={"include_usage": True},
                                                               logprobs=True, max_tokens=40))
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            assert r.headers["x-guardrail-action"] == "pending"  # known at the end: the report chunk says
            ev = sse_events(r.text)
            assert ev[-1] == "[DONE]"
            chunks = ev[:-1]
            assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
            content = [ch for ch in chunks if ch["choices"] and ch["choices"][0]["delta"].get("content")]
            # the shipped regime baseline's calibrated interval (8 tokens) sets the checkpoints
            assert [len(ch["choices"][0]["logprobs"]["content"]) for ch in content] == [8, 8, 8, 1]
            assert "".join(ch["choices"][0]["delta"]["content"] for ch in content) == seg.text
            fin = [ch for ch in chunks if ch["choices"] and ch["choices"][0]["finish_reason"]]
            assert len(fin) == 1 and fin[0]["choices"][0]["finish_reason"] == "stop"
            last = chunks[-1]
            assert last["choices"] == [] and last["usage"]["completion_tokens"] == 25
            g = last["guardrail"]
            assert g["action"] in ("allow", "annotate") and g["stream"]["released_tokens"] == 25
            assert [cp["tokens"] for cp in g["stream"]["checkpoints"]] == [8, 16, 24]
            assert g["stream"]["method"] == "calibrated"
            assert be.streams == [(25, True)]
            assert app.state.guardrail.models[MODEL].admission.in_flight == 0
    run(go())


def test_degenerate_stream_is_cut_with_content_filter_and_the_backend_stream_closed():
    async def go():
        rng = np.random.default_rng(4)
        seg = segment(list(rng.gamma(1.2, 0.9, 20)) + list(rng.uniform(10, 13, 200)),
                      list(rng.uniform(1.0, 2.5, 220)), Side.OUTPUT,
                      [f"ok{i % 7}" for i in range(20)] + [f"z{i}q" for i in range(200)])
        async with proxy([benign(), stream_of(seg, "length")]) as (c, be, _app):
            r = await c.post("/v1/chat/completions", json=chat(stream=True, max_tokens=256))
            ev = sse_events(r.text)
            fin = [ch for ch in ev[:-1] if ch["choices"] and ch["choices"][0]["finish_reason"]]
            assert fin[0]["choices"][0]["finish_reason"] == "content_filter"
            g = ev[-2]["guardrail"]
            assert g["action"] == "reject" and g["stream"]["aborted_at"] <= 64
            text = "".join(ch["choices"][0]["delta"].get("content") or "" for ch in ev[:-1] if ch["choices"])
            assert len(text.split()) == g["stream"]["released_tokens"] < g["stream"]["aborted_at"]
            assert be.streams == [(g["stream"]["aborted_at"], False)]  # the backend stream was closed early
            m = (await c.get("/metrics")).text
            assert 'guardrail_stream_aborts_total{policy="default"} 1.0' in m
            saved = 256 - g["stream"]["aborted_at"]
            assert f'guardrail_tokens_saved_total{{model="m"}} {float(saved)}' in m
    run(go())


def test_stream_with_a_rejected_prompt_is_a_plain_400():
    async def go():
        async with proxy([gibberish_suffix()]) as (c, be, app):
            r = await c.post("/v1/chat/completions", json=chat(stream=True))
            assert_openai_error(r, 400, "guardrail_rejected")
            assert r.json()["guardrail"]["action"] == "reject" and [k for k, _ in be.calls] == ["score"]
            assert app.state.guardrail.models[MODEL].admission.in_flight == 0
    run(go())


def test_backend_fault_mid_stream_ends_with_an_error_event_not_a_500():
    async def go():
        seg = typical(40)
        events = [*stream_of(seg)[:20], BackendUnavailableError("connection reset by peer")]
        async with proxy([benign(), events]) as (c, _be, app):
            r = await c.post("/v1/chat/completions", json=chat(stream=True))
            assert r.status_code == 200
            ev = sse_events(r.text)
            assert ev[-1] == "[DONE]" and "error" in ev[-2] and "connection reset" in ev[-2]["error"]["message"]
            text = "".join(ch["choices"][0]["delta"].get("content") or "" for ch in ev[:-2] if ch.get("choices"))
            assert len(text.split()) == 16  # what passed the checkpoints (every 8 tokens), nothing unassessed
            assert app.state.guardrail.models[MODEL].admission.in_flight == 0
    run(go())


def test_keepalive_comments_while_text_is_held_back():
    async def go():
        seg = typical(20)
        async with proxy([benign(), stream_of(seg)]) as (c, be, _app):
            be.delay = 0.02  # 20 tokens held back for the first checkpoint: ~0.4 s without a byte of text
            import guardrail.proxy.streaming as st
            old, st.KEEPALIVE_S = st.KEEPALIVE_S, 0.05
            try:
                r = await c.post("/v1/chat/completions", json=chat(stream=True))
            finally:
                st.KEEPALIVE_S = old
            assert ": keep-alive" in r.text and sse_events(r.text)[-1] == "[DONE]"
    run(go())


def test_client_logprobs_trimmed_to_its_top_logprobs():
    async def go():
        async with proxy([benign(), generation(benign(12, seed=3))]) as (c, be, _):
            r = await c.post("/v1/chat/completions", json=chat(logprobs=True, top_logprobs=0))
            assert r.status_code == 200, r.text
            content = r.json()["choices"][0]["logprobs"]["content"]
            assert len(content) == 12 and all(e["top_logprobs"] == [] for e in content)
            assert "".join(e["token"] for e in content) == r.json()["choices"][0]["message"]["content"]
            assert all(e["logprob"] <= 0 for e in content)
            assert be.calls[1][1].top_logprobs == 0
    run(go())


def test_metrics_count_requests_actions_and_p_values():
    async def go():
        async with proxy([benign(), generation(benign(40, seed=3)), gibberish_suffix()]) as (c, _be, _):
            await c.post("/v1/chat/completions", json=chat())
            await c.post("/v1/chat/completions", json=chat())
            await c.post("/v1/chat/completions", json={"model": MODEL})
            text = (await c.get("/metrics")).text
            assert 'guardrail_requests_total{model="m",route="chat",status="200"} 1.0' in text
            assert 'guardrail_requests_total{model="m",route="chat",status="400"} 1.0' in text
            assert 'guardrail_requests_total{model="?",route="chat",status="400"} 1.0' in text
            assert 'guardrail_actions_total{action="reject",policy="default"} 1.0' in text
            assert 'guardrail_side_actions_total{action="reject",policy="default",side="prompt"} 1.0' in text
            assert "guardrail_p_value_bucket" in text and 'side="prompt"' in text
            assert 'guardrail_stage_milliseconds_count{stage="total"} 2.0' in text
            assert re.search(r'guardrail_drift_log10_martingale\{baseline="[^"]+",side="prompt"\} -?[0-9.]', text)
            assert re.search(r'guardrail_drift_alarms\{baseline="[^"]+",side="prompt"\} [0-9]+\.0', text)
    run(go())


def test_text_completions_continue_a_raw_prompt_with_the_report():
    async def go():
        async with proxy([benign(), generation(benign(12, seed=3)), benign(seed=8), stream_of(typical(20))]) as (
                c, be, _):
            r = await c.post("/v1/completions", json={"model": MODEL, "prompt": "The capital of France is",
                                                      "max_tokens": 12, "temperature": 0.7})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
            assert body["choices"][0]["text"].startswith("the river") and "message" not in body["choices"][0]
            assert body["guardrail"]["action"] in ("allow", "annotate")
            req = be.calls[1][1]
            assert req.raw_prompt == "The capital of France is" and req.messages[0].content == req.raw_prompt
            r = await c.post("/v1/completions", json={"model": MODEL, "prompt": ["Once upon a time"], "stream": True,
                                                      "max_tokens": 30, "temperature": 0.7})
            ev = sse_events(r.text)
            assert ev[-1] == "[DONE]" and all(e["object"] == "text_completion" for e in ev[:-1])
            text = "".join(e["choices"][0]["text"] for e in ev[:-1] if e["choices"])
            assert text and ev[-2]["guardrail"]["attempts"][0]["text"] == text
    run(go())


def test_text_completions_give_the_client_legacy_logprobs():
    """``logprobs: N`` on /v1/completions: tokens, token_logprobs, top_logprobs (N alternatives, token -> logprob)
    and text_offset into the completion's text, streamed too (offsets running over the chunks)."""
    async def go():
        async with proxy([benign(), generation(benign(12, seed=3)), benign(seed=8), stream_of(typical(20))]) as (
                c, be, _):
            r = await c.post("/v1/completions", json={"model": MODEL, "prompt": "The capital of France is",
                                                      "max_tokens": 12, "temperature": 0.7, "logprobs": 0})
            assert r.status_code == 200, r.text
            choice = r.json()["choices"][0]
            lp = choice["logprobs"]
            assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) == 12
            assert "".join(lp["tokens"]) == choice["text"]
            assert all(x <= 0 for x in lp["token_logprobs"]) and lp["top_logprobs"] == [{}] * 12
            assert lp["text_offset"] == [sum(len(t) for t in lp["tokens"][:i]) for i in range(12)]
            assert be.calls[1][1].logprobs
            r = await c.post("/v1/completions", json={"model": MODEL, "prompt": "Once upon a time", "stream": True,
                                                      "max_tokens": 30, "temperature": 0.7, "logprobs": 0})
            ev = [e for e in sse_events(r.text)[:-1] if e["choices"] and e["choices"][0]["logprobs"]]
            tokens = [t for e in ev for t in e["choices"][0]["logprobs"]["tokens"]]
            offsets = [o for e in ev for o in e["choices"][0]["logprobs"]["text_offset"]]
            text = "".join(e["choices"][0]["text"] for e in ev)
            assert tokens and "".join(tokens) == text
            assert offsets == [sum(len(t) for t in tokens[:i]) for i in range(len(tokens))]
            assert all(e["choices"][0]["logprobs"]["top_logprobs"] == [{}] * len(e["choices"][0]["logprobs"]["tokens"])
                       for e in ev)
    run(go())
    chat_req, _ = CompletionRequest.model_validate({"model": MODEL, "prompt": "x", "logprobs": 3}).as_chat()
    assert chat_req.logprobs and chat_req.top_logprobs == 3  # N alternatives per token, as chat's top_logprobs


def test_legacy_logprobs_shape_from_chat_logprobs():
    content = [{"token": "Hel", "logprob": -0.5, "top_logprobs": [{"token": "Hel", "logprob": -0.5},
                                                                   {"token": "Hi", "logprob": -1.5}]},
               {"token": "lo", "logprob": -0.1, "top_logprobs": [{"token": "lo", "logprob": -0.1}]}]
    lp, end = legacy_logprobs({"content": content}, offset=4)
    assert lp == {"tokens": ["Hel", "lo"], "token_logprobs": [-0.5, -0.1],
                  "top_logprobs": [{"Hel": -0.5, "Hi": -1.5}, {"lo": -0.1}], "text_offset": [4, 7]}
    assert end == 9 and legacy_logprobs(None, 3) == (None, 3)


@pytest.mark.parametrize(("body", "param"), [
    ({"model": MODEL, "prompt": "x", "echo": True}, "echo"),
    ({"model": MODEL, "prompt": "x", "logprobs": 21}, "logprobs"),
    ({"model": MODEL, "prompt": "x", "logprobs": True}, "logprobs"),
    ({"model": MODEL, "prompt": ["a", "b"]}, "prompt"),
    ({"model": MODEL, "prompt": ""}, "prompt"),
    ({"model": MODEL}, "prompt"),
    ({"model": MODEL, "prompt": "x", "suffix": "y"}, "suffix"),
])
def test_text_completions_refuse_what_the_guard_cannot_follow(body, param):
    async def go():
        async with proxy() as (c, be, _):
            r = await c.post("/v1/completions", json=body)
            assert_openai_error(r, 400, param=param)
            assert be.calls == []
    run(go())


def test_guard_stream_reads_ahead_within_its_buffer_and_closes_the_source():
    """GuardStream: events already read come out without waiting and in bursts (ready()); the reader stops at
    the buffer's size (a slow client holds the backend back); a wait with nothing arriving gives None (a
    keep-alive) and the read goes on; an error in the source is raised to the consumer; aclose() closes the
    source even while the reader is waiting on it."""
    from guardrail.proxy.streaming import GuardStream

    async def main() -> None:
        produced: list[int] = []
        gate = asyncio.Event()
        closed = asyncio.Event()

        async def source():
            try:
                for i in range(10):
                    if i == 6:
                        await gate.wait()
                    produced.append(i)
                    yield i
                raise ValueError("backend fault")
            finally:
                closed.set()

        gs = GuardStream(source(), buffer=3)
        assert await gs.next(1.0) == 0
        await asyncio.sleep(0.01)
        assert produced == [0, 1, 2, 3]  # three waiting in the buffer, the reader stopped
        assert gs.ready() == [1, 2, 3]
        await asyncio.sleep(0.01)
        assert produced == [0, 1, 2, 3, 4, 5]
        assert [await gs.next(1.0), await gs.next(1.0)] == [4, 5]
        assert await gs.next(0.05) is None  # nothing within the wait: a keep-alive
        gate.set()
        got = [await gs.next(1.0) for _ in range(4)]
        assert got == [6, 7, 8, 9]
        with pytest.raises(ValueError, match="backend fault"):
            await gs.next(1.0)
        assert closed.is_set()

        async def endless():
            try:
                yield 0
                await asyncio.Event().wait()  # a backend that never answers again
                yield 1
            finally:
                closed2.set()

        closed2 = asyncio.Event()
        gs2 = GuardStream(endless())
        assert await gs2.next(1.0) == 0
        assert await gs2.next(0.02) is None
        await gs2.aclose()
        assert closed2.is_set() and gs2._reader is not None and gs2._reader.done()
        await gs2.aclose()  # once

        async def short():
            yield 1

        gs3 = GuardStream(short())
        assert await gs3.next(1.0) == 1
        with pytest.raises(StopAsyncIteration):
            await gs3.next(1.0)

    asyncio.run(main())


def test_sse_stream_delivers_the_text_before_a_failure_and_ends_a_cancelled_source_with_an_error():
    """Bursts are written at once, but text already formatted still leaves when the end's handling fails; a
    cancellation inside the Guard's stream (not the client's) ends the SSE with an error event and [DONE], not a
    quiet, truncated 200; the stream is closed once; a GuardStream closed before its reader ever ran gives no
    keep-alives afterwards."""
    from types import SimpleNamespace

    from guardrail.guard.streaming import StreamDelta, StreamEnd
    from guardrail.proxy.streaming import GuardStream, sse_stream

    start = SimpleNamespace(report=SimpleNamespace(request_id="r1"))

    async def body(source, on_end=lambda e: None) -> tuple[bytes, int]:
        closed = []

        async def on_close() -> None:
            closed.append(1)

        gs = GuardStream(source)
        out = b"".join([c async for c in sse_stream(gs, start, model="m", include_usage=False, logprobs=False,
                                                     top_logprobs=0, on_end=on_end, on_close=on_close)])
        return out, len(closed)

    async def ends_badly():
        yield StreamDelta("hello")
        yield StreamDelta(" world")
        yield StreamEnd(None, "stop")  # type: ignore[arg-type]

    def on_end(e):
        raise ValueError("report failed")

    async def cancelled_inside():
        yield StreamDelta("part")
        f = asyncio.get_running_loop().create_future()
        f.cancel()
        await f

    def texts(events) -> list[str]:
        return [e["choices"][0]["delta"].get("content") for e in events if isinstance(e, dict) and e.get("choices")]

    async def main() -> None:
        out, n_closed = await body(ends_badly(), on_end)
        events = sse_events(out.decode())
        assert texts(events) == ["", "hello", " world"]  # the role chunk, then both deltas
        assert "error" in events[-2] and events[-1] == "[DONE]" and n_closed == 1
        out, n_closed = await body(cancelled_inside())
        events = sse_events(out.decode())
        assert texts(events) == ["", "part"] and "error" in events[-2] and events[-1] == "[DONE]"
        assert n_closed == 1

        async def never():
            yield StreamDelta("x")

        gs = GuardStream(never())
        await gs.next(0.01)  # the reader task exists but has not run yet
        gs2 = GuardStream(never())
        gs2._reader = asyncio.ensure_future(gs2._read())
        await gs2.aclose()  # cancelled before its first step
        with pytest.raises(StopAsyncIteration):
            await gs2.next(0.01)
        await gs.aclose()

    asyncio.run(main())
