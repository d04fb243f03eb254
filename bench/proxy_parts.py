"""Processes the proxy benchmark starts: a fast fake OpenAI-compatible backend and the minimal pass-through ASGI
proxy (the floor for any Python proxy).  Raw ASGI, no framework, so that they cost as little as possible.

    python bench/proxy_parts.py fake --port P                 # 32 tokens, 5 alternatives each; stream or not
    python bench/proxy_parts.py floor --port Q --backend URL  # parse JSON (orjson), forward with one shared httpx client
"""

from __future__ import annotations

import argparse
import json

N_TOKENS = 32
WORDS = ("the river runs past old mills and quiet farms where people grow apples pears plums beans corn wheat "
         "barley oats and keep bees goats sheep horses in fields near small towns with markets").split()


def _entry(i: int) -> dict:
    w = " " + WORDS[i % len(WORDS)]
    lp = -0.3 - (i * 37 % 11) * 0.25
    tops = [{"token": w, "logprob": lp, "bytes": list(w.encode())}] + [
        {"token": f" alt{k}", "logprob": lp - 0.5 - k, "bytes": list(f" alt{k}".encode())} for k in range(4)]
    return {"token": w, "logprob": lp, "bytes": list(w.encode()), "top_logprobs": tops}


ENTRIES = [_entry(i) for i in range(N_TOKENS)]
TEXT = "".join(e["token"] for e in ENTRIES)
USAGE = {"prompt_tokens": 12, "completion_tokens": N_TOKENS, "total_tokens": 12 + N_TOKENS}
BODY = json.dumps({"id": "chatcmpl-fake", "object": "chat.completion", "created": 1, "model": "fake",
                   "choices": [{"index": 0, "message": {"role": "assistant", "content": TEXT},
                                "logprobs": {"content": ENTRIES}, "finish_reason": "stop"}],
                   "usage": USAGE}).encode()
CHUNKS = [("data: " + json.dumps({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1,
                                  "model": "fake", "choices": [{"index": 0, "delta": {"content": e["token"]},
                                                                "logprobs": {"content": [e]},
                                                                "finish_reason": "stop" if i == N_TOKENS - 1 else None}]})
           + "\n\n").encode() for i, e in enumerate(ENTRIES)]
CHUNKS.append(("data: " + json.dumps({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1,
                                      "model": "fake", "choices": [], "usage": USAGE}) + "\n\n").encode())
CHUNKS.append(b"data: [DONE]\n\n")


async def _read(receive) -> bytes:
    body = b""
    while True:
        msg = await receive()
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            return body


async def fake_app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = json.loads(await _read(receive) or b"{}")
    if body.get("stream"):
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        for c in CHUNKS:
            await send({"type": "http.response.body", "body": c, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": BODY})


def floor_app(backend: str):
    import httpx
    import orjson

    client = httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=512, max_keepalive_connections=128))

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        body = orjson.loads(await _read(receive))  # the fastest JSON a Python proxy has (guardrail uses it too)
        if body.get("stream"):
            async with client.stream("POST", backend + "/chat/completions", json=body) as r:
                await send({"type": "http.response.start", "status": r.status_code,
                            "headers": [(b"content-type", b"text/event-stream")]})
                async for chunk in r.aiter_raw():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        r = await client.post(backend + "/chat/completions", json=body)
        out = orjson.dumps(orjson.loads(r.content))
        await send({"type": "http.response.start", "status": r.status_code,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": out})

    return app


def main() -> None:
    import uvicorn

    ap = argparse.ArgumentParser()
    ap.add_argument("kind", choices=["fake", "floor"])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--backend", default=None)
    a = ap.parse_args()
    app = fake_app if a.kind == "fake" else floor_app(a.backend)
    uvicorn.run(app, host="127.0.0.1", port=a.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
