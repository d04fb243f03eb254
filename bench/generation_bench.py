"""The embedded backend's generation speed with and without the streaming assessor attached (issue 12's
benchmark; goal: at most 2 % slower).  Greedy generations of the same prompts, so both runs produce the same
tokens; the runs alternate (ABAB...) so a drift in the machine's speed falls on both; wall time of the whole
stream as the client sees it (llama.cpp's threads do the work, so process time would count them too)."""

from __future__ import annotations

import asyncio
import time

from guardrail.backends.base import GenerationRequest, Message
from guardrail.backends.llamacpp import LlamaCppBackend
from guardrail.baselines.registry import regimes
from guardrail.guard.policy import StreamRules
from guardrail.guard.stream_assess import StreamAssessor

PROMPTS = [
    "Explain how a refrigerator keeps food cold.",
    "Write a short note to a colleague about moving tomorrow's meeting.",
    "What are three tips for learning a new language?",
    "Describe the water cycle for a ten-year-old.",
]
MAX_TOKENS = 128


async def _one(backend, prompt: str, assessor: StreamAssessor | None) -> tuple[int, float]:
    req = GenerationRequest(messages=[Message(role="user", content=prompt)], max_tokens=MAX_TOKENS, temperature=0.0,
                            seed=0, logprobs=True, top_logprobs=0)
    n, t0 = 0, time.perf_counter()
    async for ev in backend.stream(req):
        if ev.token is not None:
            n += 1
            if assessor is not None:
                assessor.push(ev.token)
    return n, time.perf_counter() - t0


async def _run(rounds: int) -> dict:
    backend = LlamaCppBackend()
    base = min(regimes("general"), key=lambda b: float(b.unit["temperature"]))
    rules = StreamRules(check_every=8, abort_p=0.01)  # the calibrated rule (past 80 tokens: windows of the last 80); a
    # cut is recorded but the generation goes on (both runs make the same tokens)
    await _one(backend, PROMPTS[0], None)  # warm-up (model load, caches)
    tok = {"off": 0, "on": 0}
    secs = {"off": 0.0, "on": 0.0}
    checkpoints = 0
    for r in range(rounds):
        for p in PROMPTS:
            for mode in (("off", "on") if r % 2 == 0 else ("on", "off")):
                a = StreamAssessor(base, rules, MAX_TOKENS) if mode == "on" else None
                n, s = await _one(backend, p, a)
                tok[mode] += n
                secs[mode] += s
                checkpoints += len(a.info.checkpoints) if a is not None else 0
    off, on = tok["off"] / secs["off"], tok["on"] / secs["on"]
    return {"prompts": len(PROMPTS), "rounds": rounds, "max_tokens": MAX_TOKENS, "tokens_per_run": tok["off"] // rounds,
            "same_tokens": tok["on"] == tok["off"], "checkpoints_assessed": checkpoints, "baseline": base.id,
            "tokens_per_s_without": round(off, 2), "tokens_per_s_with_assessor": round(on, 2),
            "slowdown_pct": round(100 * (1 - on / off), 2), "goal_slowdown_pct": 2}


def bench_generation(rounds: int = 4) -> dict:
    return asyncio.run(_run(rounds))


if __name__ == "__main__":
    import json

    print(json.dumps(bench_generation(), indent=1))
