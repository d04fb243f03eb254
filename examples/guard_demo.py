"""`make run` (until the proxy takes it over): the Guard deciding on the embedded model, offline.

1. a benign question: allowed;
2. the same kind of question with a GCG suffix from the development data: rejected before generation, with the
   flagged span and its p-value;
3. a generation forced to degenerate (temperature 1.9): flagged, regenerated down the ladder, the retry passes.

    python examples/guard_demo.py [--policy default] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from guardrail.guard import Guard

HERE = Path(__file__).resolve().parent
GCG = HERE.parent / "tests" / "data" / "attacks_gcg_sample.jsonl"


def show(title: str, res) -> None:
    r = res.report
    print(f"\n== {title}")
    print(f"   action: {r.action} -- {r.reason}")
    if r.prompt is not None and r.prompt.p_value is not None:
        print(f"   prompt: p={r.prompt.p_value:.3g} top={r.prompt.top_signal}")
        for v in r.prompt.verdicts:
            for s in v.spans if r.prompt.action != "allow" else []:
                print(f"   flagged span in message {s.message} [{s.start}:{s.end}]: {s.text!r}")
    for a in r.attempts:
        o = a.output
        print(f"   attempt {a.index}: T={a.sampling.temperature:g} seed={a.sampling.seed} -> {a.action}"
              + (f" (output p={o.p_value:.3g}, top {o.top_signal})" if o and o.p_value is not None else "")
              + f": {a.text[:70]!r}")
    if res.error is not None:
        print(f"   -> HTTP {res.status}: {res.error['error']['code']}")
    else:
        print(f"   -> delivered: {(res.content or '')[:100]!r}")
    print(f"   tokens {r.usage.total_tokens}, {r.timings.total_ms:.0f} ms "
          f"(screen {r.timings.screen_ms:.0f}, generate {r.timings.generate_ms:.0f}, score {r.timings.score_ms:.0f})")


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", default="default")
    ap.add_argument("--json", action="store_true", help="print the three reports as one JSON document")
    args = ap.parse_args()
    guard = Guard.from_policy(args.policy)
    gcg = json.loads(GCG.read_text(encoding="utf-8").splitlines()[0])["prompt"]
    cases = [
        ("benign question", "What are three tips for keeping houseplants healthy?", {"max_tokens": 64}),
        ("GCG-suffixed prompt", gcg, {"max_tokens": 64}),
        ("degenerate generation (temperature 1.9)", "Write a short poem about the sea.",
         {"max_tokens": 48, "temperature": 1.9, "request_id": "demo-degenerate"}),
    ]
    out = {}
    for title, prompt, kw in cases:
        res = await guard.chat([{"role": "user", "content": prompt}], **kw)
        out[title] = res.to_json()
        if not args.json:
            show(title, res)
    if args.json:
        print(json.dumps(out, ensure_ascii=False))
    await guard.aclose()


if __name__ == "__main__":
    asyncio.run(main())
