"""Output baselines of the embedded model's OWN generations, one per sampling regime (the Guard uses the
nearest regime's baseline for the serving model's own output, and reports which and how far).

Reads eval/generations/<model>.jsonl (scripts/generate_outputs.py), keeps out the loops (an n-gram of >= 3
tokens repeated >= 4 times in the last 100 tokens: degenerate, not normal), splits by prompt (the one split
rule), fits cross-conformal on train + calib and reports the realised flag rate on the held-back test split
and, as positives, the loop rate flagged.  Writes guardrail/data/baselines/general~t<T>.output.json and
eval/generations/fit.json.

    python scripts/fit_generation_baselines.py
    python scripts/fit_stream_calibration.py    # then: the rewritten files lose their stream calibration
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from guardrail.backends.base import ScorerInfo  # noqa: E402
from guardrail.baselines.conformal import min_n  # noqa: E402
from guardrail.baselines.features import features  # noqa: E402
from guardrail.baselines.fit import DEFAULT_SIGNALS, DEFAULT_WIDTHS, files_sha256, fit_from_features, rate_check  # noqa: E402
from guardrail.baselines.model import save_baseline  # noqa: E402
from guardrail.baselines.splits import split_of  # noqa: E402
from guardrail.evaluation.generations import GenerationStore  # noqa: E402
from guardrail.types import Segment, Side  # noqa: E402

OUT = ROOT / "guardrail" / "data" / "baselines"


def regime_name(t: float) -> str:
    return "t" + f"{t:g}".replace(".", "")


OWN_SIGNALS = (*DEFAULT_SIGNALS, "lag_repeat")  # loops repeat at a fixed lag, often with a changing counter


async def with_stored_features(rows: list[dict]) -> None:
    """Every row's features recomputed from its generation's tokens as the model gave them (the generation store;
    a missing one is generated again from its recorded prompt, temperature, seed and max_tokens: the same text)."""
    store, backend = GenerationStore(), None
    for r in rows:
        key = (r["scorer"], r["prompt"], r["temperature"], r["seed"], r["max_tokens"])
        g = store.get(*key)
        if g is None:
            if backend is None:
                from guardrail.backends.llamacpp import LlamaCppBackend

                backend = LlamaCppBackend()
            g, _ = await store.generate(backend, *key[1:])
        if g.text != r["text"]:
            raise SystemExit(f"the stored generation for {r['prompt'][:60]!r} differs from the recorded text")
        info = ScorerInfo.from_id(r["scorer"])
        seg = Segment(text=g.text, side=Side.OUTPUT, tokens=list(g.tokens), backend=info.backend, model=info.model,
                      tokenizer=info.tokenizer, logprob_mode=info.logprob_mode, scorer_id=r["scorer"],
                      entropy_k=r["features"].get("entropy_k") and int(r["features"]["entropy_k"]))
        r["features"] = features(seg, DEFAULT_WIDTHS)
    if backend is not None:
        backend.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=None)
    args = ap.parse_args()
    path = args.data or next((ROOT / "eval" / "generations").glob("smollm2*.jsonl"))
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    asyncio.run(with_stored_features(rows))
    report = {"data": str(path.relative_to(ROOT)), "regimes": {}}
    for t in sorted({r["temperature"] for r in rows}):
        rs = [r for r in rows if r["temperature"] == t and r["features"] is not None]
        normal = [r for r in rs if not r["loop"]]
        loops = [r for r in rs if r["loop"]]
        feats = {"train": [], "calib": [], "test": []}
        groups = {"train": [], "calib": [], "test": []}
        for r in normal:
            sp = split_of(r["prompt"])
            feats[sp].append(r["features"])
            groups[sp].append(r["prompt"])
        n_fit = len(feats["train"]) + len(feats["calib"])
        alphas = [0.01, 0.05] if n_fit >= min_n(0.01) else [0.02, 0.05]
        sid = rs[0]["scorer"]
        b = fit_from_features(
            ScorerInfo.from_id(sid), feats, groups, domain=f"general~{regime_name(t)}",
            side=Side.OUTPUT, alphas=alphas, widths=DEFAULT_WIDTHS, signals=OWN_SIGNALS,
            unit={"kind": "generation", "temperature": t, "top_p": 1.0, "max_tokens": rs[0]["max_tokens"],
                  "seeds": "from the prompt", "loops": "excluded (n-gram >= 3 tokens x >= 4 in the last 100)"},
            corpus={"files": [path.name], "sha256": files_sha256([path]), "n_records": len(rs),
                    "n_loops_excluded": len(loops)}, max_buckets=2,
        )
        out = OUT / f"general~{regime_name(t)}.output.json"
        save_baseline(b, out)
        loop_flags = {a: sum(b.assess(r["features"], a).flag for r in loops) for a in alphas}
        report["regimes"][f"{t:g}"] = {
            "baseline": b.id, "file": out.name, "n": len(rs), "n_loops": len(loops), "n_fit": n_fit,
            "resolution": b.resolution,
            "test": [rate_check(r.flags, r.n, r.alpha) for r in b.test_rates],
            "loops_flagged": {f"{a:g}": f"{k}/{len(loops)}" for a, k in loop_flags.items()},
        }
        print(f"T={t:g}: {out.name} n_fit={n_fit} loops={len(loops)} resolution={b.resolution:.3g} "
              + ", ".join(f"a={r.alpha}: {r.flags}/{r.n}" for r in b.test_rates)
              + f"; loops flagged {loop_flags}")
    (ROOT / "eval" / "generations" / "fit.json").write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
