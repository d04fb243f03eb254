"""The streaming assessor's cost (issue 12's benchmark): per-token update of the incremental signals, per-checkpoint
decision against the shipped own-generation baseline, and a 2,000-token stream assessed end to end against the
whole-text path re-run on the prefix at every checkpoint (quadratic).  Synthetic tokens; process time."""

from __future__ import annotations

import time

import numpy as np

from guardrail.baselines.features import features
from guardrail.baselines.registry import regimes
from guardrail.baselines.stream_state import StreamState
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
    n_cp = N // k
    return {
        "tokens": N, "check_every": k, "checkpoints": n_cp, "baseline": base.id,
        "us_per_token_update": round(t_push / N * 1e6, 2), "goal_us_per_token": 10,
        "us_per_checkpoint_decision": round((t_stream - t_push) / n_cp * 1e6, 1), "goal_us_per_checkpoint": 20,
        "stream_ms": round(t_stream * 1e3, 1), "whole_text_each_checkpoint_ms": round(t_whole * 1e3, 1),
        "whole_vs_stream": round(t_whole / t_stream, 1),
    }


if __name__ == "__main__":
    import json

    print(json.dumps(bench_assessor(), indent=1))
