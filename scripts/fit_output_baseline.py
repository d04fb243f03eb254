"""Fit the shipped output-side baseline (guardrail/data/baselines/general.output.json) for the embedded model.

Units: reference answers (prompts: outputs/reference_outputs.jsonl: AlpacaEval outputs of GPT-4-1106,
Llama-2-7B-chat and Qwen1.5-1.8B-chat), each teacher-forced as the assistant's reply to its instruction --
what the guard sees on the output side.  Split by the instruction (all answers to one instruction share a
split); at most --max-units answers (taken in a fixed hash order) keep the run within ~15 minutes on 2 cores.
Scores are cached.  Part of `make baselines`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from guardrail.backends.llamacpp import LlamaCppBackend  # noqa: E402
from guardrail.baselines.corpus import read_records  # noqa: E402
from guardrail.baselines.features import features  # noqa: E402
from guardrail.baselines.fit import DEFAULT_SIGNALS, DEFAULT_WIDTHS, files_sha256, fit_from_features, rate_check  # noqa: E402
from guardrail.baselines.model import save_baseline  # noqa: E402
from guardrail.baselines.splits import group_hash, split_of  # noqa: E402
from guardrail.batch import score_replies  # noqa: E402
from guardrail.cache import ScoreCache, default_cache_path  # noqa: E402
from guardrail.types import Side  # noqa: E402

OUT = ROOT / "guardrail" / "data" / "baselines"
ALPHAS = [0.01, 0.05]
MAX_UNITS = 700


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--max-units", type=int, default=MAX_UNITS)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    path = args.data / "outputs" / "reference_outputs.jsonl"
    recs = read_records(path, "output", "instruction")
    recs = sorted(recs, key=lambda r: group_hash("order\x00" + r.group + "\x00" + r.text))[: args.max_units]
    backend = LlamaCppBackend(None, n_threads=args.threads)
    cache = ScoreCache(default_cache_path())
    t = time.time()
    segs = await score_replies(backend, [(r.group, r.text) for r in recs], cache=cache)
    print(f"scored {len(recs)} replies in {time.time() - t:.0f} s ({sum(s is None for s in segs)} unscorable)")
    feats: dict = {"train": [], "calib": [], "test": []}
    groups: dict = {"train": [], "calib": [], "test": []}
    for r, s in zip(recs, segs, strict=True):
        sp = split_of(r.group)
        feats[sp].append(features(s, DEFAULT_WIDTHS) if s is not None else None)
        groups[sp].append(r.group)
    b = fit_from_features(
        backend.scorer, feats, groups, domain="general", side=Side.OUTPUT, alphas=ALPHAS, widths=DEFAULT_WIDTHS,
        signals=DEFAULT_SIGNALS, unit={"kind": "reply", "conditioned_on": "instruction", "max_units": args.max_units},
        corpus={"files": [path.name], "sha256": files_sha256([path]), "n_records": len(recs)},
    )
    save_baseline(b, OUT / "general.output.json")
    results_path = OUT / "results.json"
    results = json.loads(results_path.read_text())
    results["output"] = {"general": {"baseline": b.id, "rates": [rate_check(r.flags, r.n, r.alpha) for r in b.test_rates]}}
    results_path.write_text(json.dumps(results, indent=1) + "\n")
    print(", ".join(f"a={r.alpha}: {r.flags}/{r.n}" for r in b.test_rates))


if __name__ == "__main__":
    asyncio.run(main())
