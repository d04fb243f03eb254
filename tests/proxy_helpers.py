"""The proxy app in-process (httpx.ASGITransport) with a scripted backend claiming the embedded scorer's identity,
so the real shipped baselines and policies judge chosen numbers."""

from __future__ import annotations

import itertools
import json
from contextlib import asynccontextmanager

import httpx
from guard_helpers import embedded_scorer

from guardrail.backends.scripted import ScriptedBackend
from guardrail.proxy import ProxyConfig, create_app
from guardrail.proxy.config import ModelRoute

MODEL = "m"
_n = itertools.count()


def config(**kw) -> ProxyConfig:
    route = kw.pop("route", {})
    return ProxyConfig(models={MODEL: ModelRoute(**{"policies": ["default", "strict", "shadow"], **route})}, **kw)


def fit_inputs(tmp_path, field: str = "text"):
    """The benign test prompts (tests/data, deduplicated) as a JSONL file with ``field``, and an empty
    baselines folder: what the fit-through-a-server tests give `guardrail baseline fit`."""
    from pathlib import Path

    rows = {}
    for f in ("benign_sample.jsonl", "eval_prompts.jsonl"):
        for line in (Path(__file__).parent / "data" / f).read_text().splitlines():
            r = json.loads(line)
            if r.get("label") == "benign":
                rows[r["prompt"]] = r
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps({field: p}) + "\n" for p in rows))
    bdir = tmp_path / "baselines"
    bdir.mkdir()
    return data, bdir


def user(text: str | None = None) -> list[dict]:
    """A user message with unique content (the Guard caches verdicts by content)."""
    return [{"role": "user", "content": text or f"question number {next(_n)} about rivers"}]


@asynccontextmanager
async def running(app, *, wait_ready: bool = True, timeout: float = 30.0):
    """The app's lifespan (models loaded, asserted ready unless told) and an in-process client to it."""
    async with app.router.lifespan_context(app):
        if wait_ready:
            await app.state.loaded.wait()
            assert app.state.guardrail.ready, app.state.guardrail.error
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://proxy",
                                     timeout=timeout) as client:
            yield client


@asynccontextmanager
async def proxy(script=(), cfg: ProxyConfig | None = None, *, wait_ready: bool = True):
    backend = ScriptedBackend(script, scorer=embedded_scorer())
    app = create_app(cfg or config(), backends={MODEL: backend}, scorer_factory=lambda: backend)
    async with running(app, wait_ready=wait_ready) as client:
        yield client, backend, app


def sse_events(text: str) -> list[dict | str]:
    out: list[dict | str] = []
    for block in text.split("\n\n"):
        block = block.strip()
        if not block or block.startswith(":"):
            continue
        assert block.startswith("data: "), block
        data = block.removeprefix("data: ")
        out.append(data if data == "[DONE]" else json.loads(data))
    return out


async def gcg_rejected_and_stream_text(c, model: str, gcg_prompt: str) -> tuple[str, list]:
    """Two checks every real-backend proxy test makes: a GCG-suffixed prompt is rejected before generation; a
    short greedy stream comes through.  Returns the streamed text and the events."""
    r = await c.post("/v1/chat/completions", json={
        "model": model, "max_tokens": 24, "messages": [{"role": "user", "content": gcg_prompt}]})
    assert r.status_code == 400 and r.json()["error"]["code"] == "guardrail_rejected"
    r = await c.post("/v1/chat/completions", json={
        "model": model, "max_tokens": 16, "temperature": 0, "stream": True,
        "messages": [{"role": "user", "content": "Name a colour."}]})
    ev = sse_events(r.text)
    text = "".join(ch["choices"][0]["delta"].get("content") or "" for ch in ev[:-1] if ch["choices"])
    assert text and ev[-1] == "[DONE]" and ev[-2]["guardrail"]["attempts"][0]["text"] == text
    return text, ev
