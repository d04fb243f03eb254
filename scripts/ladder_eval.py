"""The regenerate -> reject ladder on the real embedded model: what it does across many requests, and its cost.

Requests: the held-back test prompts of eval/generations (the own-generation baselines were not fitted on them;
60, each sent twice for 120 requests: the request id, hence the seed, differs), each sent through ``Guard.chat`` under the shipped ``default`` policy twice: once forced to degenerate
(temperature 1.9, word salad from a 135M model), once at the deployment's default (temperature 0, greedy) as
the control.  Per group: how many the ladder resolved by regeneration (delivered after >= 1 retry), how many it
rejected (retries exhausted), how many passed at once, and the tokens (prompt + output, every attempt) and
wall time it spent.

    python scripts/ladder_eval.py [--n 120] [--max-tokens 48]     # writes eval/ladder.json (~10 min, 2 cores)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from guardrail.backends.llamacpp import LlamaCppBackend  # noqa: E402
from guardrail.baselines.splits import split_of  # noqa: E402
from guardrail.guard import Guard, load_policy  # noqa: E402

GROUPS = {"forced_t19": 1.9, "control_t0": 0.0}


def summarise(rows: list[dict]) -> dict:
    n = len(rows)
    finals = Counter(r["action"] for r in rows)
    resolved = [r for r in rows if r["regenerated"] and r["action"] in ("allow", "annotate")]
    rejected = [r for r in rows if r["action"] == "reject"]
    first_ok = [r for r in rows if not r["regenerated"] and r["action"] in ("allow", "annotate")]
    tokens = [r["total_tokens"] for r in rows]
    secs = [r["seconds"] for r in rows]
    return {
        "n": n, "final_actions": dict(finals),
        "passed_first_attempt": len(first_ok), "resolved_by_regeneration": len(resolved),
        "rejected_after_retries": len(rejected),
        "retries_per_resolved": round(statistics.mean(r["regenerated"] for r in resolved), 2) if resolved else None,
        "first_attempt_flagged": sum(r["first_action"] == "regenerate" for r in rows),
        "tokens_total": sum(tokens), "tokens_mean": round(statistics.mean(tokens), 1),
        "tokens_mean_resolved": round(statistics.mean(r["total_tokens"] for r in resolved), 1) if resolved else None,
        "seconds_total": round(sum(secs), 1), "seconds_p50": round(statistics.median(secs), 2),
        "seconds_max": round(max(secs), 2),
        "budget_exhausted": sum(r["budget_exhausted"] is not None for r in rows),
    }


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=120, help="prompts per group")
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--policy", default="default")
    ap.add_argument("--out", type=Path, default=ROOT / "eval" / "ladder.json")
    args = ap.parse_args()
    path = next((ROOT / "eval" / "generations").glob("smollm2*.jsonl"))
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    test = sorted({r["prompt"] for r in rows if split_of(r["prompt"]) == "test"})
    prompts = [test[i % len(test)] for i in range(args.n)]  # past the test prompts: again, with another seed
    be = LlamaCppBackend()
    guard = Guard(load_policy(args.policy), be, scorer=be)
    out: dict = {"policy": args.policy, "max_tokens": args.max_tokens, "prompts": f"{path.relative_to(ROOT)} (test split)",
                 "groups": {}}
    t0 = time.perf_counter()
    for name, temp in GROUPS.items():
        res = []
        for i, p in enumerate(prompts):
            t = time.perf_counter()
            r = (await guard.chat([{"role": "user", "content": p}], max_tokens=args.max_tokens,
                                  temperature=temp, request_id=f"ladder-{name}-{i}")).report
            res.append({"action": r.action, "regenerated": r.regenerated, "total_tokens": r.usage.total_tokens,
                        "first_action": r.attempts[0].action if r.attempts else None,
                        "budget_exhausted": r.budget_exhausted, "seconds": time.perf_counter() - t})
        out["groups"][name] = {"temperature": temp, **summarise(res)}
        print(name, json.dumps(out["groups"][name]), flush=True)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    be.close()


if __name__ == "__main__":
    asyncio.run(main())
