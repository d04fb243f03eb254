"""`make baselines`: fit the shipped starter baselines for the embedded model, reproducibly.

From the development set (../shared/data, or DATA_DIR): one corpus baseline (side ``text``) per domain corpus,
a prompt-side baseline from prompts/benign.jsonl (domain ``general``, side ``prompt``), and one global baseline
fitted on all domains pooled (to show where a single baseline is miscalibrated).  Splits are by a hash of the
group key (the document), made by the same rule evaluation uses.  Caps keep the run within ~45 minutes on
2 cores: documents are visited in hash order, at most ceil(MAX_UNITS / documents) chunks each (<= MAX_PER_DOC),
MAX_UNITS chunks per domain.

Writes guardrail/data/baselines/<domain>.<side>.json and guardrail/data/baselines/results.json (the realised
flag rates on each domain's held-back test split, per-domain and global).  Scores are cached, so a re-run
only re-fits.
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
from guardrail.baselines.corpus import cut_units, read_records, spread_units  # noqa: E402
from guardrail.baselines.fit import (  # noqa: E402
    DEFAULT_SIGNALS,
    featurize,
    files_sha256,
    fit_baseline,
    fit_from_features,
    flag_rate,
    rate_check,
    split_units,
)
from guardrail.baselines.model import save_baseline  # noqa: E402
from guardrail.baselines.splits import group_hash, split_of  # noqa: E402
from guardrail.cache import ScoreCache, default_cache_path  # noqa: E402
from guardrail.types import Side  # noqa: E402

DOMAINS = ["general_wiki", "general_chat", "code_python", "legal_contracts", "medical_qa", "medical_abstracts",
           "support_dialogues"]
CHUNK_CHARS = [256, 512, 1024]
MAX_PER_DOC = 16
MAX_UNITS = 500
ALPHAS = [0.01, 0.05]
OUT = ROOT / "guardrail" / "data" / "baselines"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def domain_units(path: Path, max_units: int):
    records = read_records(path)
    recipe, units = spread_units(records, CHUNK_CHARS, max_units=max_units, max_per_doc=MAX_PER_DOC)
    return records, recipe, units


def rate_row(rep, alpha: float) -> dict:
    return rate_check(rep.flags, rep.n, alpha)


def split_ablation(backend, b, feats, units, attack_feats=None) -> list[dict]:
    """The same baseline calibrated split-conformally (reference from train, thresholds from calib only):
    its realised test rates, for the comparison with the shipped cross-conformal calibration."""
    groups = {k: [u.group for u in v] for k, v in split_units(units).items()}
    s = fit_from_features(
        backend.scorer, feats, groups, domain=b.domain, side=Side(b.side), alphas=ALPHAS, widths=b.widths,
        signals=DEFAULT_SIGNALS, unit=b.unit, corpus=b.corpus, attack_feats=attack_feats, calibration="split",
    )
    return [rate_row(r, r.alpha) for r in s.test_rates]


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--max-units", type=int, default=MAX_UNITS, help="chunks per domain at most")
    ap.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: all cores)")
    args = ap.parse_args()
    max_units = args.max_units
    data = Path(args.data)
    if not data.exists():
        sys.exit(f"error: {data} not found: make baselines needs the development set (../shared/data)")
    backend = LlamaCppBackend(n_threads=args.threads)
    cache = ScoreCache(default_cache_path())
    OUT.mkdir(parents=True, exist_ok=True)
    results: dict = {"scorer_id": backend.scorer.id, "chunk_chars": CHUNK_CHARS, "max_per_doc": MAX_PER_DOC,
                     "max_units": max_units, "alphas": ALPHAS, "per_domain": {}, "global": {}, "prompt": {}}
    # the global baseline pools the domains' units; checks cut new corpora for it at up to MAX_PER_DOC per document
    unit_desc = {"kind": "chunk", "chunk_chars": CHUNK_CHARS, "per_doc": MAX_PER_DOC, "max_per_doc": MAX_PER_DOC,
                 "max_units": max_units}
    all_units, test_feats = [], {}
    for d in DOMAINS:
        path = data / "domains" / f"{d}.jsonl"
        records, recipe, units = domain_units(path, max_units)
        log(f"{d}: {len(records)} documents -> {len(units)} units")
        b, feats = await fit_baseline(
            backend, units, domain=d, side=Side.TEXT, alphas=ALPHAS, unit={**unit_desc, **recipe.model_dump()},
            corpus={"files": [path.name], "sha256": files_sha256([path]), "n_records": len(records)}, cache=cache,
        )
        save_baseline(b, OUT / f"{d}.text.json")
        test_feats[d] = feats["test"]
        split = split_ablation(backend, b, feats, units)
        results["per_domain"][d] = {"baseline": b.id, "rates": [rate_row(r, r.alpha) for r in b.test_rates],
                                    "split_conformal_rates": split}
        log(f"{d}: " + ", ".join(f"a={r.alpha}: {r.flags}/{r.n}" for r in b.test_rates)
            + " (split conformal: " + ", ".join(f"{r['flags']}/{r['n']}" for r in split) + ")")
        all_units.extend(units)
    # one global baseline on all domains pooled (scores come from the cache)
    g, _ = await fit_baseline(
        backend, all_units, domain="global", side=Side.TEXT, alphas=ALPHAS, unit=unit_desc,
        corpus={"files": [f"{d}.jsonl" for d in DOMAINS], "n_records": None,
                "sha256": files_sha256([data / "domains" / f"{d}.jsonl" for d in DOMAINS])}, cache=cache,
    )
    save_baseline(g, OUT / "global.text.json")
    for d in DOMAINS:
        results["global"][d] = {"baseline": g.id, "rates": [rate_row(flag_rate(g, test_feats[d], a), a) for a in ALPHAS]}
    log("global: " + ", ".join(f"{d} a=0.01: {results['global'][d]['rates'][0]['flag_rate']:.4f}" for d in DOMAINS))
    # prompt-side baseline: whole benign prompts
    ppath = data / "prompts" / "benign.jsonl"
    precs = read_records(ppath, "prompt")
    punits = cut_units(precs, None, max_per_doc=1)
    # the supervised detector learns from attacks of the TRAIN split only (split by goal, as evaluation does)
    attack_files = [data / "prompts" / "attacks_gcg.jsonl", data / "prompts" / "attacks_random_search.jsonl"]
    attacks = [r for f in attack_files for r in read_records(f, "prompt", "goal") if split_of(r.group) == "train"]
    log(f"prompt baseline: {len(punits)} benign prompts, {len(attacks)} training attacks")
    p, pfeats = await fit_baseline(
        backend, punits, domain="general", side=Side.PROMPT, alphas=ALPHAS,
        unit={"kind": "record"}, corpus={"files": [ppath.name], "sha256": files_sha256([ppath]), "n_records": len(precs),
                                         "attack_files": [f.name for f in attack_files], "n_attacks": len(attacks)},
        cache=cache, attacks=[r.text for r in attacks],
    )
    p.training_groups = sorted(set(p.training_groups) | {group_hash(r.group) for r in attacks})
    save_baseline(p, OUT / "general.prompt.json")
    attack_feats = [f for f in await featurize(backend, [r.text for r in attacks], Side.PROMPT, p.widths, cache) if f]
    results["prompt"]["general"] = {"baseline": p.id, "rates": [rate_row(r, r.alpha) for r in p.test_rates],
                                    "split_conformal_rates": split_ablation(backend, p, pfeats, punits, attack_feats)}
    log("prompt: " + ", ".join(f"a={r.alpha}: {r.flags}/{r.n}" for r in p.test_rates))
    (OUT / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    log(f"wrote {OUT}")


if __name__ == "__main__":
    asyncio.run(main())
