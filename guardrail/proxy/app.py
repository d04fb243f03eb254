"""The OpenAI-compatible proxy: a FastAPI app from :func:`create_app`, a thin adapter around the Guard.

Routes: ``POST /v1/chat/completions`` (stream and not), ``GET /v1/models``, ``GET /healthz`` (the process is
up), ``GET /readyz`` (backends and baselines loaded), ``GET /metrics`` (Prometheus), the OpenAPI document.
Every error is OpenAI's shape with the right status (errors.py); the report rides under ``guardrail`` in the
body and in ``x-guardrail-*`` headers.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import Response, StreamingResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..backends.base import Backend
from ..guard.guard import Guard
from ..guard.result import GuardResult
from ..guard.streaming import StreamEnd
from ..jsonio import loads
from .auth import KeyRing
from .chat_request import ChatRequest, CompletionRequest, guard_messages
from .config import ProxyConfig
from .errors import JSONBody, ProxyError, error_response, from_exception
from .metrics import CONTENT_TYPE_LATEST, ProxyMetrics
from .responses import completion_body, sse_chunks, text_completion
from .state import ProxyState, ServedModel
from .streaming import GuardedStreamingResponse, GuardStream, sse_stream

__all__ = ["create_app"]

log = logging.getLogger("guardrail.proxy")
_RID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def create_app(config: ProxyConfig | None = None, *, backends: Mapping[str, Backend] | None = None,
               scorer_factory: Callable[[], Backend] | None = None) -> FastAPI:
    """The proxy app.  ``backends`` (served name -> backend) and ``scorer_factory`` replace what the config
    would build (tests, embedding the proxy in a larger app)."""
    cfg = config or ProxyConfig()
    state = ProxyState(cfg, backends=backends, scorer_factory=scorer_factory)
    metrics = ProxyMetrics()
    keys = KeyRing(cfg.keys)
    loaded = asyncio.Event()

    async def load() -> None:
        try:
            await asyncio.to_thread(state.build)
            log.info("ready", extra={"models": list(state.models)})
        except Exception as e:  # a config or model error: /readyz and every request say it
            state.error = f"not ready: {e}"
            log.error("start-up failed: %s", e)
        finally:
            loaded.set()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(load())
        try:
            yield
        finally:
            if not task.done():
                await asyncio.wait([task])
            await state.aclose()

    app = FastAPI(title="guardrail", version="0.1.0", lifespan=lifespan,
                  description="OpenAI-compatible proxy that screens prompts and outputs by token logprobs.")
    app.state.guardrail = state
    app.state.metrics = metrics
    app.state.loaded = loaded
    if cfg.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=cfg.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["*"], expose_headers=["x-request-id", "x-guardrail-action",
                                                                "x-guardrail-policy", "x-guardrail-overhead-ms"])

    @app.exception_handler(ProxyError)
    async def _proxy_error(request: Request, exc: ProxyError) -> JSONBody:
        return error_response(exc.status, exc.message, code=exc.code, param=exc.param, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONBody:
        msg = {404: f"no route {request.url.path}", 405: f"method {request.method} not allowed on "
               f"{request.url.path}"}.get(exc.status_code, str(exc.detail))
        return error_response(exc.status_code, msg, code={404: "unknown_url", 405: "method_not_allowed"}.get(
            exc.status_code), headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONBody:
        err = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        return error_response(400, f"{_loc(err['loc'])}: {err['msg']}", param=_loc(err["loc"]))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONBody:
        rid = request.headers.get("x-request-id", "")
        log.exception("unexpected error", extra={"request_id": rid})
        return error_response(500, "internal error (logged with the request id)", code="internal_error")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONBody:
        if state.ready:
            return JSONBody({"status": "ready", "models": list(state.models)})
        return error_response(503, state.error or "starting: the models are still loading", code="not_ready",
                              headers={"retry-after": "2"})

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        key = keys.authenticate(request.headers.get("authorization"))
        names = [n for n in cfg.models if key is None or "*" in key.models or n in key.models]
        return {"object": "list", "data": [{"id": n, "object": "model", "created": 0, "owned_by": "guardrail"}
                                           for n in names]}

    @app.post("/v1/chat/completions", openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"type": "object", "required": ["model", "messages"]}}}}})
    async def chat_completions(request: Request) -> Response:
        return await _route(request, "chat")

    @app.post("/v1/completions", openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"type": "object", "required": ["model", "prompt"]}}}}})
    async def completions(request: Request) -> Response:
        return await _route(request, "completions")

    async def _route(request: Request, route: str) -> Response:
        t0 = time.perf_counter()
        rid = request.headers.get("x-request-id", "")
        rid = rid if _RID.match(rid) else uuid.uuid4().hex[:24]
        ctx: dict[str, Any] = {"model": "?"}
        status = 500
        try:
            resp = await _chat(request, rid, ctx, route)
            status = resp.status_code
            return resp
        except ProxyError as e:
            status = e.status
            return error_response(e.status, e.message, code=e.code, param=e.param,
                                  headers={**e.headers, "x-request-id": rid})
        except Exception as e:  # guardrail's own errors map to statuses; anything else is logged, answered 500
            err = from_exception(e)
            status = err.status
            if status == 500:
                log.exception("unexpected error", extra={"request_id": rid})
            return error_response(err.status, err.message, code=err.code, param=err.param,
                                  headers={**err.headers, "x-request-id": rid})
        finally:
            metrics.requests.labels(route, ctx["model"], str(status)).inc()
            log.info("request", extra={"request_id": rid, "status": status, "model": ctx["model"],
                                       "action": ctx.get("action"), "policy": ctx.get("policy"),
                                       "ms": round((time.perf_counter() - t0) * 1e3, 1)})

    async def _chat(request: Request, rid: str, ctx: dict[str, Any], route: str = "chat") -> Response:
        key = keys.authenticate(request.headers.get("authorization"))
        body = await _read_json(request, cfg.limits.max_body_bytes)
        raw_prompt = None
        try:
            if route == "completions":
                req, raw_prompt = CompletionRequest.model_validate(body).as_chat()
            else:
                req = ChatRequest.model_validate(body)
        except ValidationError as e:
            err = e.errors()[0]
            raise ProxyError(400, f"{_loc(err['loc'])}: {err['msg']}", param=_loc(err["loc"])) from None
        served = state.served(req.model)
        ctx["model"] = req.model
        choice = req.guardrail
        policy = (choice.policy if choice else None) or request.headers.get("x-guardrail-policy") or None
        domain = (choice.domain if choice else None) or request.headers.get("x-guardrail-domain") or None
        guard = served.guard(policy, domain)
        keys.authorize(key, req.model, guard.policy.name)
        keys.admit(key)
        passthrough = served.backend.capabilities.passthrough
        req.check_supported(served.route.backend, passthrough)
        msgs = guard_messages(req, cfg.limits.max_prompt_chars, passthrough)
        assert served.admission is not None
        kw = req.guard_call(max_tokens=req.max_new_tokens(cfg.limits.default_max_tokens, cfg.limits.max_tokens),
                            temperature=served.route.default_temperature, passthrough=passthrough,
                            raw_prompt=raw_prompt)
        kw["request_id"] = rid
        ctx["text"] = raw_prompt is not None
        if req.stream:
            return await _open_stream(served, guard, req, msgs, kw, rid, ctx)
        async with served.admission:
            metrics.in_flight.labels(req.model).inc()
            try:
                async with asyncio.timeout(served.route.timeout_s):
                    res = await guard.chat(msgs, **kw)
            except TimeoutError:
                raise ProxyError(504, f"no answer within {served.route.timeout_s:g} s", code="timeout") from None
            finally:
                metrics.in_flight.labels(req.model).dec()
        return _answer(res, req, msgs, rid, ctx)

    def _observe(res: GuardResult, req: ChatRequest, msgs: list, rid: str, ctx: dict[str, Any]) -> None:
        metrics.observe(req.model, res.report)
        ctx.update(action=res.report.action, policy=res.report.policy)
        if cfg.log_content:
            log.info("content", extra={"request_id": rid, "messages": [m.model_dump() for m in msgs],
                                       "output": res.report.attempts[-1].text if res.report.attempts else None})

    def _answer(res: GuardResult, req: ChatRequest, msgs: list, rid: str, ctx: dict[str, Any]) -> Response:
        _observe(res, req, msgs, rid, ctx)
        headers = _headers(res, rid)
        if res.error is not None:
            return JSONBody({**res.error, "guardrail": res.report.model_dump(mode="json")},
                                status_code=res.status, headers=headers)
        top = req.top_logprobs or 0
        if req.stream and res.completion is not None:  # ended before generation: a held or refusal completion
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            sse = sse_chunks(res, model=req.model, include_usage=include_usage, text=bool(ctx.get("text")))
            return StreamingResponse(sse,
                                     media_type="text/event-stream", headers={**headers, "cache-control": "no-cache"})
        body = completion_body(res, model=req.model, logprobs=req.logprobs, top_logprobs=top)
        return JSONBody(text_completion(body) if ctx.get("text") else body, headers=headers)

    async def _open_stream(served: ServedModel, guard: Guard, req: ChatRequest, msgs: list, kw: dict[str, Any],
                           rid: str, ctx: dict[str, Any]) -> Response:
        adm = served.admission
        assert adm is not None
        await adm.__aenter__()
        metrics.in_flight.labels(req.model).inc()
        events = GuardStream(guard.stream(msgs, **kw))
        closed = False

        async def close() -> None:
            nonlocal closed
            if closed:
                return
            closed = True
            try:
                await events.aclose()
            finally:
                metrics.in_flight.labels(req.model).dec()
                await adm.__aexit__(None, None, None)

        try:
            first = await anext(events.events)
        except BaseException:
            await close()
            raise
        if isinstance(first, StreamEnd):  # ended before generation: the prompt was rejected or held
            await close()
            return _answer(first.result, req, msgs, rid, ctx)

        def on_end(end: StreamEnd) -> None:
            _observe(end.result, req, msgs, rid, ctx)
            if end.aborted and end.result.report.stream is not None:
                metrics.aborts.labels(end.result.report.policy).inc()
                metrics.tokens_saved.labels(req.model).inc(max(0, kw["max_tokens"] -
                                                               (end.result.report.stream.aborted_at or 0)))

        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        body = sse_stream(events, first, model=req.model, include_usage=include_usage, logprobs=req.logprobs,
                          top_logprobs=req.top_logprobs or 0, on_end=on_end, on_close=close,
                          text=bool(ctx.get("text")))
        headers = {"x-request-id": rid, "x-guardrail-action": "pending", "x-guardrail-policy": guard.policy.name,
                   "x-guardrail-overhead-ms": f"{first.report.timings.screen_ms:.1f}", "cache-control": "no-cache"}
        return GuardedStreamingResponse(body, on_close=close, media_type="text/event-stream", headers=headers)

    return app


def _headers(res: GuardResult, rid: str) -> dict[str, str]:
    return {"x-request-id": rid, "x-guardrail-action": res.report.action, "x-guardrail-policy": res.report.policy,
            "x-guardrail-overhead-ms": f"{res.report.timings.overhead_ms:.1f}"}


async def _read_json(request: Request, limit: int) -> Any:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ProxyError(413, f"request body of {declared} bytes is over this server's limit of {limit}",
                         code="request_too_large")
    buf = bytearray()
    async for part in request.stream():
        buf += part
        if len(buf) > limit:
            raise ProxyError(413, f"request body is over this server's limit of {limit} bytes",
                             code="request_too_large")
    if not buf:
        raise ProxyError(400, "the request body is empty: send a JSON object", code="invalid_json")
    try:
        body = loads(buf)
    except (ValueError, UnicodeDecodeError) as e:
        raise ProxyError(400, f"the request body is not valid JSON: {e}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise ProxyError(400, "the request body must be a JSON object", code="invalid_json")
    return body


def _loc(loc: Any) -> str:
    out = ""
    for x in loc:
        out += f"[{x}]" if isinstance(x, int) else (f".{x}" if out else str(x))
    return out or "body"
