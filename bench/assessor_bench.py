"""The streaming assessor's cost (issue 12's benchmark): per-token update of the incremental signals, per-checkpoint
decision against the shipped own-generation baseline, and a 2,000-token stream assessed end to end against the
whole-text path re-run on the prefix at every checkpoint (quadratic).  Synthetic tokens; process time.

The per-checkpoint decision is measured on the model's own normal generations when the generation store has them
(``guardrail eval stream`` fills it; ~/.cache/guardrail/generations.jsonl), replayed at their own regime's baseline
and cut-off: the features snapshot, the decision (the precomputed signal thresholds, and the full assessment for
the checkpoints they do not clear), and the full assessment alone for comparison.  Without a store, the synthetic
stream's checkpoints (mostly not cleared against the greedy baseline: its word distribution is not a generation's).
"""

from __future__ import annotations

import time

import numpy as np

from guardrail.baselines.features import features
from guardrail.baselines.registry import regimes
from guardrail.baselines.stream_bounds import stream_bounds
from guardrail.baselines.stream_calibration import CheckpointFeatures
from guardrail.baselines.stream_state import StreamState
from guardrail.evaluation.generations import GenerationStore
from guardrail.guard.policy import StreamRules
from guardrail.guard.stream_assess import StreamAssessor
from guardrail.types import LogprobMode, Segment, Side, Token

N = 2000


def _tokens(n: int, seed: int = 0) -> list[Token]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        w = f" w{int(rng.integers(0, 500))}".encode()
        out.append(Token(w.decode(), w, -float(rng.gamma(1.2, 0.9)), entropy=float(rng.gamma(2.0, 0.7))))
    return out


def _best(fn, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return best


def _checkpoint_costs(streams, abort_p: float = 0.01) -> dict:
    """Per checkpoint of ``streams`` ((baseline, tokens) pairs, within the calibrated length): the features
    snapshot, then over all those checkpoints the decision, then the full assessment alone (best of 3 passes each;
    the thresholds are made before, as the assessor makes them once per baseline and cut-off)."""
    points, snap = [], 0.0
    for base, toks in streams:
        cal = base.stream
        k, window = (cal.check_every, cal.calibrated_length) if cal else (8, None)
        bounds = stream_bounds(base.calibrator, cal.threshold(abort_p) if cal else abort_p)
        cf = CheckpointFeatures(base.widths, base.entropy_k, k, window)
        for t in toks:
            cf.state.push(t)
            cf.n += 1
            if cf.n % k == 0 and not cf.beyond:
                t0 = time.process_time()
                f = cf.state.features(base.entropy_k)
                snap += time.process_time() - t0
                points.append((base, bounds, f))

    def decide():
        for base, bounds, f in points:
            if not bounds.clear(f):
                base.assess(f, max(base.target_alphas))

    def full():
        for base, _, f in points:
            base.assess(f, max(base.target_alphas))

    n = len(points)
    return {"checkpoints_measured": n, "cleared_share": round(sum(b.clear(f) for _, b, f in points) / n, 3),
            "us_per_checkpoint_snapshot": round(snap / n * 1e6, 1),
            "us_per_checkpoint_decision": round(_best(decide, 3) / n * 1e6, 1),
            "us_per_checkpoint_full_assessment": round(_best(full, 1) / n * 1e6, 1)}


def _stored_streams(limit: int = 150):
    """The store's normal generations of the shipped regimes' baselines, ``limit`` per regime (none: [])."""
    store = GenerationStore()
    if not len(store):
        return []
    out = []
    for base in regimes("general"):
        temp = float(base.unit["temperature"])
        length = base.stream.calibrated_length if base.stream else 0
        gens = [g for g in store if g.temperature == temp and not g.loop and g.max_tokens >= length]
        out += [(base, g.tokens) for g in gens[:limit]]
    return out


def bench_assessor() -> dict:
    toks = _tokens(N)
    base = min(regimes("general"), key=lambda b: float(b.unit["temperature"]))
    rules = StreamRules(check_every=8, abort_p=0.01)

    def push_only():
        s = StreamState(base.widths)
        for t in toks:
            s.push(t)

    def assessed():
        a = StreamAssessor(base, rules, N)
        for t in toks:
            a.push(t)

    def whole_each_checkpoint():
        k = base.stream.check_every if base.stream else rules.check_every
        for n in range(k, N + 1, k):
            seg = Segment(text="", side=Side.OUTPUT, tokens=toks[:n], backend="b", model="m", tokenizer="t",
                          logprob_mode=LogprobMode.RAW, scorer_id=base.scorer_id)
            base.assess(features(seg, base.widths), max(base.target_alphas))

    t_push = _best(push_only)
    t_stream = _best(assessed)
    t_whole = _best(whole_each_checkpoint, 1)
    k = base.stream.check_every if base.stream else rules.check_every
    stored = _stored_streams()
    cp = _checkpoint_costs(stored or [(base, toks)])
    return {
        "tokens": N, "check_every": k, "checkpoints": N // k, "baseline": base.id,
        "us_per_token_update": round(t_push / N * 1e6, 2), "goal_us_per_token": 10,
        "checkpoint_source": f"{len(stored)} stored normal generations (both regimes, abort_p 0.01)" if stored
        else f"the synthetic stream's first {base.stream.calibrated_length if base.stream else N} tokens",
        **cp, "goal_us_per_checkpoint": 20,
        "stream_ms": round(t_stream * 1e3, 1), "whole_text_each_checkpoint_ms": round(t_whole * 1e3, 1),
        "whole_vs_stream": round(t_whole / t_stream, 1),
    }


if __name__ == "__main__":
    import json

    print(json.dumps(bench_assessor(), indent=1))
