"""A recording OpenAI-compatible server on 127.0.0.1 (FastAPI under uvicorn in a thread): it keeps every request
body as it arrived and answers like a chat server would -- tool calls when tools are offered (streamed as
``delta.tool_calls`` pieces when asked to stream), text otherwise,
with or without logprobs as asked, streamed or not.  Evidence that the proxy forwards requests unchanged and
returns what the backend said."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

ANSWER = "Paris is the capital of France."
TOOL_CALL = {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\", \"unit\": \"celsius\"}"}}


def _logprobs(words: list[str]) -> dict:
    return {"content": [{"token": w, "logprob": -0.5 - (i % 3) * 0.4, "bytes": list(w.encode()),
                         "top_logprobs": []} for i, w in enumerate(words)]}


def _words(text: str) -> list[str]:
    out, cur = [], ""
    for ch in text:
        if ch == " " and cur:
            out.append(cur)
            cur = ""
        cur += ch
    return [*out, cur] if cur else out


class ThreadServer:
    """An ASGI app under uvicorn on 127.0.0.1 (a free port) in a daemon thread, for the duration of a with."""

    def __init__(self, app) -> None:
        self.app = app
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "recording server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


class RecordingServer(ThreadServer):
    def __init__(self, chunk_delay: float = 0.0) -> None:
        self.requests: list[dict] = []
        self.clients: list[tuple[str, int]] = []  # (host, port) each request came from: one port, one connection
        self.disconnects = 0
        self.completed = 0
        self.chunk_delay = chunk_delay
        app = FastAPI()
        app.post("/v1/chat/completions")(self._chat)
        app.post("/v1/completions")(self._text)
        super().__init__(app)

    async def _text(self, request: Request):
        body = await request.json()
        self.requests.append(body)
        usage = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
        return JSONResponse({"id": "cmpl-rec", "object": "text_completion", "created": 1, "model": body.get("model"),
                             "choices": [{"index": 0, "text": " Paris.", "logprobs": None, "finish_reason": "stop"}],
                             "usage": usage})

    async def _chat(self, request: Request):
        body = await request.json()
        self.requests.append(body)
        self.clients.append((request.client.host, request.client.port) if request.client else ("?", 0))
        words = _words(body.get("x_answer") or ANSWER)
        want_lp = bool(body.get("logprobs"))
        common = {"id": "chatcmpl-rec", "created": 1, "model": body.get("model"), "system_fingerprint": "fp_rec"}
        usage = {"prompt_tokens": 11, "completion_tokens": len(words), "total_tokens": 11 + len(words)}
        if body.get("tools") and not body.get("stream"):
            msg = {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]}
            return JSONResponse({**common, "object": "chat.completion", "usage": usage, "choices": [
                {"index": 0, "message": msg, "logprobs": None, "finish_reason": "tool_calls"}]})
        if not body.get("stream"):
            return JSONResponse({**common, "object": "chat.completion", "usage": usage, "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "".join(words)},
                 "logprobs": _logprobs(words) if want_lp else None, "finish_reason": "stop"}]})

        if body.get("tools"):  # a tool call streamed as OpenAI does: id and name first, then argument pieces
            args = TOOL_CALL["function"]["arguments"]
            pieces = [args[i:i + 7] for i in range(0, len(args), 7)]
            first = {"index": 0, "id": TOOL_CALL["id"], "type": "function",
                     "function": {"name": TOOL_CALL["function"]["name"], "arguments": ""}}
            deltas = [{"role": "assistant", "content": None, "tool_calls": [first]}] + [
                {"tool_calls": [{"index": 0, "function": {"arguments": p}}]} for p in pieces]
            lps = [None] + [_logprobs([p]) if want_lp else None for p in pieces]
            usage = {"prompt_tokens": 11, "completion_tokens": len(pieces), "total_tokens": 11 + len(pieces)}

            async def tool_events():
                for i, (d, lp) in enumerate(zip(deltas, lps, strict=True)):
                    ch = {**common, "object": "chat.completion.chunk", "choices": [
                        {"index": 0, "delta": d, "logprobs": lp,
                         "finish_reason": "tool_calls" if i == len(deltas) - 1 else None}]}
                    yield f"data: {json.dumps(ch)}\n\n"
                yield f"data: {json.dumps({**common, 'object': 'chat.completion.chunk', 'choices': [], 'usage': usage})}\n\n"
                yield "data: [DONE]\n\n"
            return StreamingResponse(tool_events(), media_type="text/event-stream")

        async def events():
            done = False
            try:
                for i, w in enumerate(words):
                    if self.chunk_delay:
                        await asyncio.sleep(self.chunk_delay)
                    ch = {**common, "object": "chat.completion.chunk", "choices": [
                        {"index": 0, "delta": {"content": w}, "logprobs": _logprobs([w]) if want_lp else None,
                         "finish_reason": "stop" if i == len(words) - 1 else None}]}
                    yield f"data: {json.dumps(ch)}\n\n"
                yield f"data: {json.dumps({**common, 'object': 'chat.completion.chunk', 'choices': [], 'usage': usage})}\n\n"
                yield "data: [DONE]\n\n"
                done = True
            finally:  # cancelled, or closed when a send found the client gone
                if not done:
                    self.disconnects += 1
                else:
                    self.completed += 1

        return StreamingResponse(events(), media_type="text/event-stream")
