"""The proxy as users run it: `guardrail serve` in its own process on 127.0.0.1 with the real embedded model,
driven by the official openai client (sync and async, JSON and stream), by the curl and Python examples the
server prints (what `make run` shows), and stopped by SIGTERM while a request is in flight."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
GCG = json.loads((ROOT / "tests" / "data" / "attacks_gcg_sample.jsonl").read_text().splitlines()[0])
MODEL = "smollm2-135m"


class Server:
    def __init__(self, *args: str) -> None:
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        self.proc = subprocess.Popen([sys.executable, "-u", "-m", "guardrail.cli", "serve", "--port", "0", *args],
                                     cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.banner: list[str] = []
        deadline = time.monotonic() + 180
        for line in self.proc.stdout:  # type: ignore[union-attr]
            self.banner.append(line)
            if line.strip() == "PY" or time.monotonic() > deadline:
                break
        text = "".join(self.banner)
        m = re.search(r"serving (http://127\.0\.0\.1:\d+/v1)", text)
        assert m, f"no banner: {text!r} {self.proc.stderr.read() if self.proc.poll() is not None else ''}"
        self.base = m.group(1)
        self.printed = text
        self.stderr_lines: list[str] = []
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        for line in self.proc.stderr:  # type: ignore[union-attr]
            self.stderr_lines.append(line)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def server():
    s = Server()
    yield s
    assert s.stop() in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it drained on
    assert not any('"level": "error"' in line for line in s.stderr_lines), "".join(s.stderr_lines)[-2000:]
    logs = "".join(s.stderr_lines)
    assert GCG["adv_suffix"] not in logs and "capital of France" not in logs  # no content in the logs


def test_printed_curl_and_python_examples_run(server):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    curl = next(line for line in server.printed.splitlines() if line.startswith("curl "))
    out = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=120, env=env)
    body = json.loads(out.stdout)
    assert body["object"] == "chat.completion" and body["choices"][0]["message"]["content"]
    assert body["guardrail"]["action"] in ("allow", "annotate") and body["guardrail"]["policy"] == "default"
    block = server.printed[server.printed.index("python - <<'PY'"):]
    out = subprocess.run(["bash", "-c", block], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert re.search(r"^guardrail: (allow|annotate) - ", out.stdout, re.M), out.stdout


def test_openai_sync_client_json_and_stream(server):
    client = openai.OpenAI(base_url=server.base, api_key="none", max_retries=0)
    assert [m.id for m in client.models.list()] == [MODEL]
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, max_tokens=32, messages=[{"role": "user", "content": "Name three colours of the rainbow."}],
        extra_headers={"x-request-id": "sync-1"})
    r = raw.parse()
    assert raw.headers["x-request-id"] == "sync-1" and raw.headers["x-guardrail-action"] in ("allow", "annotate")
    g = r.model_extra["guardrail"]
    assert r.choices[0].message.content and g["request_id"] == "sync-1"
    assert g["prompt"]["p_value"] is not None and g["attempts"][0]["output"]["p_value"] is not None
    assert r.usage.completion_tokens == g["usage"]["completion_tokens"] > 0

    stream = client.chat.completions.create(
        model=MODEL, max_tokens=24, stream=True, stream_options={"include_usage": True}, logprobs=True,
        top_logprobs=2, messages=[{"role": "user", "content": "Say something about the sea."}])
    text, report, lps, usage = "", None, [], None
    for ch in stream:
        if ch.choices:
            text += ch.choices[0].delta.content or ""
            if ch.choices[0].logprobs and ch.choices[0].logprobs.content:
                lps += ch.choices[0].logprobs.content
        else:
            report, usage = ch.model_extra["guardrail"], ch.usage
    assert text and report is not None and usage is not None
    assert report["attempts"][-1]["text"] == text and usage.completion_tokens == report["usage"]["completion_tokens"]
    assert lps and all(len(e.top_logprobs) <= 2 for e in lps) and "".join(e.token for e in lps) == text


def test_a_request_chooses_a_shipped_policy_by_header(server):
    client = openai.OpenAI(base_url=server.base, api_key="none", max_retries=0)
    r = client.chat.completions.create(model=MODEL, max_tokens=8, extra_headers={"x-guardrail-policy": "strict"},
                                       messages=[{"role": "user", "content": "Name a fruit."}])
    assert r.model_extra["guardrail"]["policy"] == "strict"
    with pytest.raises(openai.BadRequestError) as ei:
        client.chat.completions.create(model=MODEL, max_tokens=8, extra_headers={"x-guardrail-policy": "nope"},
                                       messages=[{"role": "user", "content": "Name a fruit."}])
    assert ei.value.code == "policy_not_allowed"


def test_text_completion_continues_a_raw_prompt(server):
    client = openai.OpenAI(base_url=server.base, api_key="none", max_retries=0)
    r = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=8, temperature=0)
    assert r.object == "text_completion" and r.choices[0].text.strip()
    g = r.model_extra["guardrail"]
    assert g["prompt"]["p_value"] is not None and g["attempts"][0]["text"] == r.choices[0].text
    assert r.usage.prompt_tokens == 5  # the raw text's own tokens: no chat template around it
    # the client's own logprobs, in the completions shape (the official client's typed Logprobs)
    r = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=8, temperature=0,
                                  logprobs=2)
    lp = r.choices[0].logprobs
    assert lp is not None and "".join(lp.tokens) == r.choices[0].text and len(lp.token_logprobs) == len(lp.tokens)
    assert all(x <= 0 for x in lp.token_logprobs) and all(len(t) == 2 for t in lp.top_logprobs)
    assert all(lp.token_logprobs[i] <= max(t.values()) + 1e-9 for i, t in enumerate(lp.top_logprobs))
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(len(lp.tokens))]


def test_openai_async_client_concurrent_requests(server):
    async def go():
        client = openai.AsyncOpenAI(base_url=server.base, api_key="none", max_retries=0)

        async def one(i: int) -> str:
            if i % 2:
                s = await client.chat.completions.create(
                    model=MODEL, max_tokens=16, stream=True,
                    messages=[{"role": "user", "content": f"Count to {i + 3}."}])
                return "".join([ch.choices[0].delta.content or "" async for ch in s if ch.choices])
            r = await client.chat.completions.create(
                model=MODEL, max_tokens=16, messages=[{"role": "user", "content": f"Count to {i + 3}."}])
            return r.choices[0].message.content or ""

        outs = await asyncio.gather(*(one(i) for i in range(4)))
        await client.close()
        return outs
    outs = asyncio.run(go())
    assert len(outs) == 4 and all(outs)


def test_gcg_suffixed_prompt_is_rejected_with_the_span(server):
    client = openai.OpenAI(base_url=server.base, api_key="none", max_retries=0)
    with pytest.raises(openai.BadRequestError) as ei:
        client.chat.completions.create(model=MODEL, max_tokens=32,
                                       messages=[{"role": "user", "content": GCG["prompt"]}])
    e = ei.value
    assert e.code == "guardrail_rejected" and e.status_code == 400
    g = e.response.json()["guardrail"]
    assert g["action"] == "reject" and g["attempts"] == []
    spans = [s for v in g["prompt"]["verdicts"] for s in v["spans"]]
    start = GCG["prompt"].index(GCG["adv_suffix"])
    assert any(s["end"] > start for s in spans), spans  # the flagged stretch reaches into the suffix


def test_degenerate_stream_is_cut_early_and_its_generation_stopped(server):
    client = openai.OpenAI(base_url=server.base, api_key="none", max_retries=0)
    stream = client.chat.completions.create(
        model=MODEL, max_tokens=200, temperature=1.9, stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "Write a short poem about the sea."}])
    finish, report, usage = None, None, None
    for ch in stream:
        if ch.choices and ch.choices[0].finish_reason:
            finish = ch.choices[0].finish_reason
        if not ch.choices:
            report, usage = ch.model_extra["guardrail"], ch.usage
    assert finish == "content_filter" and report["action"] == "reject"
    cut = report["stream"]["aborted_at"]
    assert cut is not None and cut <= 32 and report["stream"]["released_tokens"] < cut
    assert usage.completion_tokens == cut  # the generation stopped where the stream was cut


def test_client_disconnect_mid_stream_frees_the_model(server):
    base = server.base.removesuffix("/v1")
    with httpx.Client(timeout=60) as c:
        with c.stream("POST", server.base + "/chat/completions", json={
                "model": MODEL, "max_tokens": 250, "temperature": 0, "stream": True,
                "messages": [{"role": "user", "content": "Write a long essay about rivers."}]}) as r:
            for line in r.iter_lines():
                if line.startswith("data: ") and '"content":"' in line and '"content":""' not in line:
                    break  # one released chunk, then hang up
        t = time.monotonic()
        r = c.post(server.base + "/chat/completions", json={
            "model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": "Say hi."}]})
        assert r.status_code == 200
        assert time.monotonic() - t < 20  # not queued behind the abandoned 250-token generation
        m = c.get(base + "/metrics").text
        assert re.search(r'guardrail_in_flight\{model="smollm2-135m"\} 0\.0', m), m[-1500:]


def test_metrics_count_what_the_server_did(server):
    # runs after the others in this module (file order)
    text = httpx.get(server.base.removesuffix("/v1") + "/metrics").text
    done = sum(float(v) for v in re.findall(r'guardrail_requests_total\{model="smollm2-135m",route="chat",'
                                            r'status="200"\} ([0-9.]+)', text))
    assert done >= 6
    assert re.search(r'guardrail_actions_total\{action="reject",policy="default"\} [1-9]', text)
    assert re.search(r'guardrail_p_value_count\{baseline="[^"]+",side="prompt"\} [1-9]', text)
    assert 'guardrail_tokens_total{kind="completion",model="smollm2-135m"}' in text
    assert re.search(r'guardrail_stream_aborts_total\{policy="default"\} [1-9]', text)
    assert re.search(r'guardrail_tokens_saved_total\{model="smollm2-135m"\} [1-9]', text)


def test_sigterm_lets_the_request_in_flight_finish():
    s = Server()
    result: dict = {}

    def call() -> None:
        r = httpx.post(s.base + "/chat/completions", timeout=120, json={
            "model": MODEL, "max_tokens": 160, "temperature": 0,
            "messages": [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]})
        result["status"], result["body"] = r.status_code, r.json()

    t = threading.Thread(target=call)
    t.start()
    time.sleep(1.0)  # the request is in flight (generating 160 tokens takes longer)
    s.proc.send_signal(signal.SIGTERM)
    t.join(timeout=120)
    assert result.get("status") == 200, result
    assert result["body"]["choices"][0]["message"]["content"]
    assert s.proc.wait(timeout=60) in (0, -signal.SIGTERM)
    assert any("Waiting for connections to close" in line or "Shutting down" in line for line in s.stderr_lines)
    with pytest.raises(httpx.ConnectError):
        httpx.get(s.base.removesuffix("/v1") + "/healthz", timeout=5)
