"""Whole-stream early abort, measured: how often a normal generation of the embedded model is cut somewhere in
its stream, and how early degenerate ones are.

Normal generations: the held-back test split of eval/generations (prompts the own-generation baselines were not
fitted on), regenerated token by token with their recorded prompt, temperature, seed and max_tokens (the same
request, so the same tokens and raw logprobs the Guard sees).  Positives: every generation labelled a loop
(never fitted on) and fresh generations at temperature 1.9 on the test prompts (word salad).  Each runs through
the Guard's StreamAssessor (checkpoint every 16 tokens, the nearest regime's baseline, Bonferroni threshold
abort_p / planned checkpoints for the recorded max_tokens) at abort_p 0.01 and 0.05.

    python scripts/stream_abort_eval.py [--salad 40]       # writes eval/stream_abort.json (~5 min on 2 cores)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from guardrail.backends.base import GenerationRequest, Message  # noqa: E402
from guardrail.backends.llamacpp import LlamaCppBackend  # noqa: E402
from guardrail.baselines.fit import binomial_interval  # noqa: E402
from guardrail.baselines.registry import regimes  # noqa: E402
from guardrail.baselines.splits import split_of  # noqa: E402
from guardrail.guard.policy import StreamRules  # noqa: E402
from guardrail.guard.stream_assess import StreamAssessor  # noqa: E402

ABORT_PS = (0.01, 0.05)
CHECK_EVERY = 16


def nearest(bs, t):
    return min(bs, key=lambda b: (abs(float(b.unit["temperature"]) - t), float(b.unit["temperature"])))


def run_assessor(baseline, tokens, max_tokens, abort_p):
    a = StreamAssessor(baseline, StreamRules(check_every=CHECK_EVERY, abort_p=abort_p), max_tokens)
    for t in tokens:
        cp = a.push(t)
        if cp is not None and cp.abort:
            return a.info.aborted_at, a.info
    return None, a.info


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--salad", type=int, default=40, help="fresh temperature-1.9 generations (positives)")
    ap.add_argument("--out", type=Path, default=ROOT / "eval" / "stream_abort.json")
    args = ap.parse_args()
    path = args.data or next((ROOT / "eval" / "generations").glob("smollm2*.jsonl"))
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    normal = [r for r in rows if not r["loop"] and split_of(r["prompt"]) == "test"]
    loops = [r for r in rows if r["loop"]]
    test_prompts = sorted({r["prompt"] for r in normal})[: args.salad]
    salad = [{"prompt": p, "temperature": 1.9, "seed": 1000 + i, "max_tokens": 80} for i, p in enumerate(test_prompts)]
    be = LlamaCppBackend()
    bs = regimes("general")
    groups = {"normal_t0": [r for r in normal if r["temperature"] == 0.0],
              "normal_t07": [r for r in normal if r["temperature"] == 0.7], "loops": loops, "salad_t19": salad}
    out: dict = {"data": str(path.relative_to(ROOT)), "check_every": CHECK_EVERY,
                 "baselines": {f"{float(b.unit['temperature']):g}": b.id for b in bs}, "groups": {}}
    t0 = time.perf_counter()
    n_tokens, mismatched = 0, 0
    for name, items in groups.items():
        res = {f"{p:g}": [] for p in ABORT_PS}
        for r in items:
            req = GenerationRequest(messages=[Message(role="user", content=r["prompt"])], max_tokens=r["max_tokens"],
                                    temperature=r["temperature"], seed=r["seed"], top_logprobs=0)
            gen = await be.generate(req)
            n_tokens += len(gen.output.tokens)
            if "text" in r and gen.output.text != r["text"]:
                mismatched += 1
            b = nearest(bs, r["temperature"])
            for p in ABORT_PS:
                at, _ = run_assessor(b, gen.output.tokens, r["max_tokens"], p)
                res[f"{p:g}"].append({"aborted_at": at, "n_tokens": len(gen.output.tokens)})
        g = {"n": len(items)}
        for p, lst in res.items():
            cut = [x for x in lst if x["aborted_at"] is not None]
            lo, hi = binomial_interval(len(cut), len(lst), 0.95) if lst else (0.0, 0.0)
            g[p] = {"aborted": len(cut), "rate": len(cut) / len(lst) if lst else 0.0, "ci95": [lo, hi],
                    "median_aborted_at": statistics.median([x["aborted_at"] for x in cut]) if cut else None,
                    "tokens_generated_after_cut_avoided": sum(x["n_tokens"] - x["aborted_at"] for x in cut)}
        out["groups"][name] = g
        print(name, json.dumps(g), flush=True)
    out["tokens"] = n_tokens
    out["regenerated_text_differs"] = mismatched
    out["seconds"] = round(time.perf_counter() - t0, 1)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    be.close()


if __name__ == "__main__":
    asyncio.run(main())
