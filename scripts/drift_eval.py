"""`make eval` (drift): the drift monitor on real traffic switches between domains.

For every shipped domain baseline: a stream of its own held-back units (the test split, cut as the baseline cuts
them; up to N), then another domain's held-back units (up to N), each text judged by the embedded model and fed to
a fresh :class:`~guardrail.guard.drift.DriftMonitor` of that baseline.  Reported per (baseline, other domain),
over R shuffles: alarms before the switch (false alarms: the monitor's promise is <= 1/alarm of runs), and the
texts after the switch until the first alarm (none: the monitor's statistic -- the decision's combined score --
does not see that shift).  Scores come from the score cache (warm after `make baselines`).

Usage: python scripts/drift_eval.py [--data ../shared/data] [--n 60] [--repeats 5] [--out eval/drift.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from guardrail.backends.llamacpp import LlamaCppBackend  # noqa: E402
from guardrail.baselines.corpus import UnitRecipe, read_records  # noqa: E402
from guardrail.baselines.registry import resolve  # noqa: E402
from guardrail.baselines.verdict import judge  # noqa: E402
from guardrail.batch import score_texts  # noqa: E402
from guardrail.cache import ScoreCache, default_cache_path  # noqa: E402
from guardrail.guard.drift import DriftMonitor  # noqa: E402
from guardrail.types import Side  # noqa: E402

DOMAINS = ["general_wiki", "general_chat", "code_python", "legal_contracts", "medical_qa", "medical_abstracts",
           "support_dialogues"]


def held_back(data: Path, domain: str, n: int) -> list[str]:
    b = resolve(domain, "text")
    units = UnitRecipe.of(b.unit).held_out(read_records(data / "domains" / f"{domain}.jsonl"), set(b.training_groups))
    rng = random.Random(f"drift:{domain}")
    rng.shuffle(units)
    return [u.text for u in units[:n]]


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "eval" / "drift.json")
    args = ap.parse_args()
    backend, cache = LlamaCppBackend(), ScoreCache(default_cache_path())
    texts = {d: held_back(args.data, d, args.n) for d in DOMAINS}
    segs = {d: await score_texts(backend, t, side=Side.TEXT, cache=cache) for d, t in texts.items()}
    out: dict = {"n_per_domain": {d: len(t) for d, t in texts.items()}, "repeats": args.repeats, "alarm": 100.0,
                 "pairs": {}}
    for d in DOMAINS:
        base = resolve(d, "text")
        judged = {e: [judge(base, s, side="prompt", scorer_kind="embedded") for s in segs[e] if s is not None]
                  for e in DOMAINS}
        for e in DOMAINS:
            if e == d:
                continue
            before, until = 0, []
            for r in range(args.repeats):
                rng = random.Random(r)
                own, other = judged[d][:], judged[e][:]
                rng.shuffle(own)
                rng.shuffle(other)
                m = DriftMonitor.for_calibrator(base.calibrator, seed=r)
                for v in own:
                    m.observe(v.monitor_point[1], v.monitor_point[0])
                before += m.alarmed
                k = len(m.alarms)
                states = [m.observe(v.monitor_point[1], v.monitor_point[0]) for v in other]
                hit = next((i for i, s in enumerate(states, 1) if s.alarms > k), None)
                until.append(hit)
            found = [u for u in until if u is not None]
            out["pairs"][f"{d} <- {e}"] = {
                "false_alarm_runs_before_switch": before, "alarmed_runs_after_switch": len(found),
                "median_texts_until_alarm": statistics.median(found) if found else None, "texts_until_alarm": until}
            print(f"{d:18s} <- {e:18s} false alarms {before}/{args.repeats}; after the switch "
                  f"{len(found)}/{args.repeats} alarmed, median {statistics.median(found) if found else '-'} texts")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    asyncio.run(main())
