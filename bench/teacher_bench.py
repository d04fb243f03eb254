"""A remote backend's stream judged by the embedded scorer at checkpoints (``stream.embedded_every``): what the
checkpoints cost the model, with reply sessions (each checkpoint decodes only what is new) and without them (each
re-scores the answer so far), against the same stream judged at its end only -- all in one run.

A scripted backend streams a fixed 187-token answer (152 pieces) at once (no backend time); the real embedded model (2
threads) teacher-forces it.  Wall time per guarded stream, median of rounds that alternate the configurations, and
the tokens the model decoded through sessions.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import numpy as np

USER = [{"role": "user", "content": "Tell me about the history of bridges."}]
ANSWER = " ".join([
    "Bridges have a long history. The earliest bridges were simple logs laid across streams, and later people built",
    "stone arches that carried roads over rivers for centuries. The Romans were great bridge builders: their arches",
    "used stone and concrete, and some still stand today. In the nineteenth century, iron and steel made longer",
    "spans possible, and suspension bridges such as the Brooklyn Bridge crossed wide rivers. Engineers learned",
    "from failures too: the Tacoma Narrows Bridge twisted in the wind and fell in 1940, which taught designers to",
    "study aerodynamics. Today, cable-stayed bridges are common for medium spans, because they are stiff and quick",
    "to build, while the longest spans still hang from cables draped over tall towers. Modern bridges are checked",
    "with sensors that measure strain, vibration and temperature, so that problems are found before they become",
    "dangerous, and new materials such as weathering steel and high-performance concrete let them last longer.",
])


class _NoSessions:
    """The embedded scorer without its reply sessions: every checkpoint re-scores the answer so far."""

    def __init__(self, inner) -> None:
        self._inner = inner

    def __getattr__(self, name):
        if name == "end_session":
            raise AttributeError(name)
        return getattr(self._inner, name)

    async def score_reply(self, messages, reply):
        return await self._inner.score_reply(messages, reply)


def bench_teacher(rounds: int = 3) -> dict:
    from guardrail.backends.llamacpp import LlamaCppBackend
    from guardrail.backends.scripted import ScriptedBackend
    from guardrail.guard import Guard

    scorer = LlamaCppBackend(n_threads=2)
    words = ANSWER.split(" ")
    policy = _policy

    configs = {"end_only": (0, True), "every_32_sessions": (32, True), "every_32_fresh": (32, False),
               "every_16_sessions": (16, True), "every_16_fresh": (16, False)}
    times: dict[str, list[float]] = {k: [] for k in configs}
    decoded: dict[str, int] = {}
    checkpoints: dict[str, int] = {}

    async def one(name: str) -> None:
        every, sessions = configs[name]
        g = Guard(policy(every), ScriptedBackend([_events(words)]), scorer=scorer if sessions else _NoSessions(scorer),
                  output_regimes=[], drift=None)
        before = scorer.engine.sessions.decoded
        t = time.perf_counter()
        out = [e async for e in g.stream(USER, max_tokens=len(words) + 8)]
        times[name].append(time.perf_counter() - t)
        decoded[name] = scorer.engine.sessions.decoded - before
        st = out[-1].result.report.stream
        checkpoints[name] = len(st.checkpoints) if st is not None else 0

    async def run_all() -> None:
        await one("end_only")  # warm-up
        for _ in range(rounds):
            for name in configs:
                await one(name)

    try:
        asyncio.run(run_all())
        n_tokens = len(scorer.engine.tokenize(ANSWER.encode()))
    finally:
        scorer.close()
    med = {k: round(float(np.median(v)), 3) for k, v in times.items()}
    return {
        "answer_tokens": n_tokens, "words_streamed": len(words), "rounds": rounds,
        "seconds_per_stream": med, "checkpoints": checkpoints,
        "tokens_decoded_through_sessions": {k: v for k, v in decoded.items() if configs[k][1] and configs[k][0]},
        "sessions_speedup": {f"every_{e}": round(med[f"every_{e}_fresh"] / med[f"every_{e}_sessions"], 2)
                             for e in (16, 32)},
        "checkpoint_cost_over_end_only": {k: round(med[k] / med["end_only"], 2) for k in med if k != "end_only"},
    }


def bench_teacher_load(concurrency: Sequence[int] = (1, 4, 5, 8), rate: float = 30.0, rounds: int = 2,
                       reply_sessions: int | None = None) -> dict:
    """Whether ``embedded_every`` can be on by default, under load: K streams at once, each from a remote server
    that sends the fixed answer at ``rate`` pieces a second (a GPU elsewhere: its time is not on these CPUs), all
    judged by the one embedded scorer (2 threads, one model gate, its reply sessions): at the end only
    (``embedded_every: 0``, the default: text is released as it comes) or every 16 pieces with reply sessions (text
    held until its checkpoint).  Per configuration: the median over streams of the time to the first released text
    and to the stream's end, the median wall time of the K streams, the tokens the model decoded through reply
    sessions per stream (what the checkpoints cost it: the engine keeps ``sessions`` of them, and a session that
    gave way -- see llama_sessions -- decodes what it lost again at its next checkpoint), and the final actions;
    odd rounds run the configurations in the reverse order."""
    from guardrail.backends.llamacpp import LlamaCppBackend
    from guardrail.backends.scripted import ScriptedBackend
    from guardrail.guard import Guard
    from guardrail.guard.streaming import StreamDelta, StreamEnd

    scorer = LlamaCppBackend(n_threads=2, **({} if reply_sessions is None else {"reply_sessions": reply_sessions}))
    words = ANSWER.split(" ")
    policy = _policy

    async def stream(every: int, out: dict) -> None:
        g = Guard(policy(every), ScriptedBackend([_events(words)], delay=1.0 / rate), scorer=scorer,
                  output_regimes=[], drift=None)
        t = time.perf_counter()
        out["first"] = None
        async for e in g.stream(USER, max_tokens=len(words) + 8):
            if isinstance(e, StreamDelta) and e.text and out["first"] is None:
                out["first"] = time.perf_counter() - t
            if isinstance(e, StreamEnd):
                out["action"] = e.result.report.action
        out["end"] = time.perf_counter() - t

    async def batch(every: int, k: int) -> dict:
        outs: list[dict] = [{} for _ in range(k)]
        before = scorer.engine.sessions.decoded
        t = time.perf_counter()
        await asyncio.gather(*(stream(every, o) for o in outs))
        return {"wall": time.perf_counter() - t, "outs": outs,
                "decoded_per_stream": (scorer.engine.sessions.decoded - before) / k}

    res: dict[str, dict] = {}
    order = [(k, every) for k in concurrency for every in (0, 16)]

    async def run_all() -> None:
        await batch(0, 1)  # warm-up, both paths
        await batch(16, 1)
        for r in range(rounds):
            for k, every in order if r % 2 == 0 else order[::-1]:
                got = await batch(every, k)
                d = res.setdefault(f"{k}_streams", {}).setdefault(
                    "end_only" if every == 0 else "every_16", {"wall": [], "first": [], "end": [], "decoded": [],
                                                               "actions": {}, "no_text": 0})
                d["wall"].append(got["wall"])
                d["decoded"].append(got["decoded_per_stream"])
                for o in got["outs"]:
                    d["end"].append(o["end"])
                    if o["first"] is None:
                        d["no_text"] += 1
                    else:
                        d["first"].append(o["first"])
                    a = o.get("action", "no end")
                    d["actions"][a] = d["actions"].get(a, 0) + 1

    capacity = scorer.engine.sessions.capacity
    try:
        asyncio.run(run_all())
    finally:
        scorer.close()
    out: dict = {"rate_pieces_per_s": rate, "pieces": len(words), "rounds": rounds, "reply_sessions": capacity}
    for k, cfgs in res.items():
        out[k] = {name: {"first_s": round(float(np.median(v["first"])), 2) if v["first"] else None,
                         "end_s": round(float(np.median(v["end"])), 2), "wall_s": round(float(np.median(v["wall"])), 2),
                         "decoded_per_stream": round(float(np.median(v["decoded"]))), "actions": v["actions"],
                         "no_text": v["no_text"]}
                  for name, v in cfgs.items()}
    return out


def _events(words: list[str]):
    from guardrail.backends.base import TokenEvent

    out = [TokenEvent(index=i, token=None, text=w if i == 0 else " " + w) for i, w in enumerate(words)]
    out[-1].finish_reason, out[-1].prompt_tokens = "stop", 12
    return out


def _policy(every: int):
    from guardrail.guard.policy import parse_policy

    return parse_policy("name: b\noutput:\n  baseline: general\n  tiers: [{p: 0.01, action: annotate}]\n"
                        f"stream: {{embedded_every: {every}, abort_p: 0.01}}\n", "b.yaml")


if __name__ == "__main__":
    import json
    import sys

    if sys.argv[1:2] == ["load"]:  # load [REPLY_SESSIONS]
        print(json.dumps(bench_teacher_load(reply_sessions=int(sys.argv[2]) if sys.argv[2:] else None), indent=1))
    else:
        print(json.dumps(bench_teacher(), indent=1))
