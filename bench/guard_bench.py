"""The Guard's own overhead per request (issue 13's benchmark): everything but the backend's time, for a 512-token
output with both sides assessed under the `default` policy.

A real prompt and a real 512-token answer are scored and generated once by the embedded model (not timed); then
each request replays them through a scripted backend that answers at once with the embedded scorer's identity,
so the time of ``Guard.chat`` is the guard's own: screening the prompt (features, assessment, verdict cache miss:
every request's text differs), the output's features and assessment, the decision, the report, the drift
monitor.  Wall-clock per request, p50 / p99 over the timed requests, and the report's own stage timings.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np

PROMPT = "Write a long, detailed essay about the history of bridges, from rope bridges to modern suspension bridges."
MAX_TOKENS = 512


async def _real_pair(max_tokens: int = MAX_TOKENS):
    """The embedded model's prompt segment and its longest answer over a few seeds (at most ``max_tokens``)."""
    from guardrail.backends.base import GenerationRequest, Message
    from guardrail.backends.llamacpp import LlamaCppBackend
    from guardrail.types import Side

    backend = LlamaCppBackend()
    try:
        prompt = await backend.score(PROMPT, side=Side.PROMPT)
        best = None
        for seed in range(3):
            g = await backend.generate(GenerationRequest(messages=[Message(role="user", content=PROMPT)],
                                                         max_tokens=max_tokens, temperature=0.7, seed=seed,
                                                         top_logprobs=0))
            if best is None or len(g.output.tokens) > len(best.output.tokens):
                best = g
            if len(best.output.tokens) >= max_tokens:
                break
        return backend.scorer, prompt, best
    finally:
        await backend.aclose()


def bench_guard(n: int = 300, warmup: int = 30) -> dict:
    import copy

    from guardrail.backends.scripted import ScriptedBackend
    from guardrail.guard import Guard, load_policy

    scorer, prompt, gen = asyncio.run(_real_pair())
    backend = ScriptedBackend(scorer=scorer)
    guard = Guard(load_policy("default"), backend)

    async def one(i: int):
        backend.enqueue(copy.copy(prompt), copy.copy(gen))
        t = time.perf_counter()
        res = await guard.chat([{"role": "user", "content": f"{PROMPT} ({i})"}], max_tokens=MAX_TOKENS,
                               temperature=0.7, seed=i)
        return time.perf_counter() - t, res.report

    async def run_all():
        lat, reports, cpu = [], [], 0.0
        for i in range(warmup + n):
            c = time.process_time()
            dt, rep = await one(i)
            if i >= warmup:
                lat.append(dt)
                reports.append(rep)
                cpu += time.process_time() - c
        return np.array(lat) * 1e3, reports, cpu

    lat, reports, cpu = asyncio.run(run_all())
    actions: dict[str, int] = {}
    for r in reports:
        actions[r.action] = actions.get(r.action, 0) + 1
    stage = {k: round(float(np.median([getattr(r.timings, k) or 0.0 for r in reports])), 3)
             for k in ("screen_ms", "score_ms", "decide_ms")}
    return {
        "requests": n, "prompt_tokens": len(prompt.tokens), "output_tokens": len(gen.output.tokens),
        "policy": "default", "actions": actions, "regenerated": sum(r.regenerated for r in reports),
        "p50_ms": round(float(np.percentile(lat, 50)), 3), "p99_ms": round(float(np.percentile(lat, 99)), 3),
        "mean_cpu_ms": round(cpu / n * 1e3, 3), "stage_p50_ms": stage, "goal_p50_ms": 1.0,
    }


if __name__ == "__main__":
    import json

    print(json.dumps(bench_guard(), indent=1))
