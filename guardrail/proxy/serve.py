"""``guardrail serve``: the proxy under uvicorn, in the foreground.  Once the models are loaded it prints a
ready-to-paste curl and Python example; Ctrl-C or SIGTERM stops accepting, lets in-flight requests finish
(up to ``limits.drain_s``), closes the backends and exits."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from .app import create_app
from .config import ProxyConfig
from .logs import configure_logging

__all__ = ["examples", "override", "serve"]

QUESTION = "What is the capital of France?"


def override(cfg: ProxyConfig, *, host: str | None = None, port: int | None = None,
             policy: str | None = None) -> ProxyConfig:
    """Command-line flags over the config file."""
    upd: dict[str, Any] = {}
    if host is not None:
        upd["host"] = host
    if port is not None:
        upd["port"] = port
    if policy is not None:
        upd["models"] = {n: r.model_copy(update={"policy": policy}) for n, r in cfg.models.items()}
    return cfg.model_copy(update=upd) if upd else cfg


def examples(base_url: str, model: str, key: str | None = None) -> str:
    """The curl and Python examples ``serve`` prints (a test runs exactly these)."""
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 48})
    auth = f" -H 'authorization: Bearer {key}'" if key else ""
    return (
        f"curl -s {base_url}/chat/completions -H 'content-type: application/json'{auth} -d '{body}'\n"
        f"\n"
        f"python - <<'PY'\n"
        f"from openai import OpenAI\n"
        f"client = OpenAI(base_url={base_url!r}, api_key={key or 'none'!r})\n"
        f"r = client.chat.completions.create(model={model!r}, max_tokens=48,\n"
        f"    messages=[{{'role': 'user', 'content': {QUESTION!r}}}])\n"
        f"print(r.choices[0].message.content)\n"
        f"print('guardrail:', r.model_extra['guardrail']['action'], '-', r.model_extra['guardrail']['reason'])\n"
        f"PY\n"
    )


def serve(cfg: ProxyConfig) -> int:
    """Run until stopped; 0 on a clean stop, 3 when the models could not be loaded."""
    import uvicorn

    configure_logging(cfg.log_level)
    app = create_app(cfg)
    server = uvicorn.Server(uvicorn.Config(app, host=cfg.host, port=cfg.port, log_config=None, access_log=False,
                                           timeout_graceful_shutdown=int(cfg.limits.drain_s) or None,
                                           lifespan="on"))

    async def announce() -> None:
        await app.state.loaded.wait()
        state = app.state.guardrail
        if not state.ready:
            print(f"guardrail: {state.error}", file=sys.stderr, flush=True)
            server.should_exit = True
            return
        while not server.started:
            await asyncio.sleep(0.05)
        host = cfg.host if cfg.host not in ("0.0.0.0", "::") else "127.0.0.1"
        port = server.servers[0].sockets[0].getsockname()[1] if server.servers else cfg.port
        base = f"http://{host}:{port}/v1"
        model = next(iter(cfg.models))
        route = cfg.models[model]
        print(f"\nguardrail is serving {base} -- model {model!r} ({route.backend}), policy {route.policy!r}; "
              f"Ctrl-C stops it.\nTry it from another terminal:\n", flush=True)
        print(examples(base, model, "<your key>" if cfg.keys else None), flush=True)

    async def main() -> None:
        task = asyncio.create_task(announce())
        try:
            await server.serve()
        finally:
            task.cancel()

    asyncio.run(main())
    return 0 if app.state.guardrail.ready else 3
