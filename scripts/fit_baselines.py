"""`make baselines`: fit the shipped starter baselines for the embedded model, reproducibly.

From the development set (../shared/data, or DATA_DIR): one corpus baseline (side ``text``) per domain corpus,
a prompt-side baseline from the broad benign corpus data/prompts (domain ``general``, side ``prompt``), and one global baseline
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
    files_sha256,
    fit_baseline,
    fit_from_features,
    flag_rate,
    rate_check,
    split_units,
)
from guardrail.baselines.model import save_baseline  # noqa: E402
from guardrail.baselines.splits import first_by_group  # noqa: E402
from guardrail.cache import ScoreCache, default_cache_path  # noqa: E402
from guardrail.types import Side  # noqa: E402

DOMAINS = ["general_wiki", "general_chat", "code_python", "legal_contracts", "medical_qa", "medical_abstracts",
           "support_dialogues"]
CHUNK_CHARS = [256, 512, 1024]
MAX_PER_DOC = 16
MAX_UNITS = 500
ALPHAS = [0.01, 0.05]
PROMPT_CORPUS = ROOT / "data" / "prompts"
PROMPT_CAP = 600
PROMPT_SIGNALS = ("excess_cusum", "same_run")
OUT = ROOT / "guardrail" / "data" / "baselines"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def domain_units(path: Path, max_units: int):
    records = read_records(path)
    recipe, units = spread_units(records, CHUNK_CHARS, max_units=max_units, max_per_doc=MAX_PER_DOC)
    return records, recipe, units


def rate_row(rep, alpha: float) -> dict:
    return rate_check(rep.flags, rep.n, alpha)


def capped(records, cap: int):
    """At most ``cap`` records, the first by the hash of their group key (reproducible, spread over groups)."""
    return [records[i] for i in first_by_group([r.group for r in records], cap)]


def split_ablation(backend, b, feats, units, attack_feats=None, signals=DEFAULT_SIGNALS, **kw) -> list[dict]:
    """The same baseline calibrated split-conformally (reference from train, thresholds from calib only):
    its realised test rates, for the comparison with the shipped cross-conformal calibration."""
    groups = {k: [u.group for u in v] for k, v in split_units(units).items()}
    s = fit_from_features(
        backend.scorer, feats, groups, domain=b.domain, side=Side(b.side), alphas=ALPHAS, widths=b.widths,
        signals=signals, unit=b.unit, corpus=b.corpus, attack_feats=attack_feats, calibration="split", **kw,
    )
    return [rate_row(r, r.alpha) for r in s.test_rates]


async def fit_domains(backend, cache, data: Path, max_units: int, results: dict) -> None:
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


async def fit_prompt(backend, cache, results: dict) -> None:
    # prompt-side baseline: the broad benign corpus (data/prompts, one file a source, see its README), at most
    # PROMPT_CAP records per source so that no source dominates; signals that a short string of rare names cannot
    # push far (excess CUSUM, same-token runs), one calibration bucket, no detector (scripts/prompt_shift.py
    # measures each choice leaving one source out)
    psources = sorted(PROMPT_CORPUS.glob("*.jsonl"))
    precs = [r for path in psources for r in capped(read_records(path, "prompt", "group"), PROMPT_CAP)]
    punits = cut_units(precs, None, max_per_doc=1)
    log(f"prompt baseline: {len(punits)} benign prompts from {len(psources)} sources")
    p, pfeats = await fit_baseline(
        backend, punits, domain="general", side=Side.PROMPT, alphas=ALPHAS, signals=PROMPT_SIGNALS, detector=False,
        max_buckets=1, trend=False, unit={"kind": "record"}, cache=cache,
        corpus={"files": [f.name for f in psources], "sha256": files_sha256(psources), "n_records": len(precs),
                "per_source_cap": PROMPT_CAP},
    )
    save_baseline(p, OUT / "general.prompt.json")
    results["prompt"]["general"] = {
        "baseline": p.id, "rates": [rate_row(r, r.alpha) for r in p.test_rates],
        "split_conformal_rates": split_ablation(backend, p, pfeats, punits, signals=PROMPT_SIGNALS, detector=False,
                                                max_buckets=1, trend=False)}
    log("prompt: " + ", ".join(f"a={r.alpha}: {r.flags}/{r.n}" for r in p.test_rates))


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--max-units", type=int, default=MAX_UNITS, help="chunks per domain at most")
    ap.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: all cores)")
    ap.add_argument("--only", choices=("all", "domains", "prompt"), default="all",
                    help="refit only the domain (and global) baselines or only the prompt-side one; the other "
                         "entries of results.json are kept")
    args = ap.parse_args()
    max_units = args.max_units
    data = Path(args.data)
    if not data.exists():
        sys.exit(f"error: {data} not found: make baselines needs the development set (../shared/data)")
    backend = LlamaCppBackend(n_threads=args.threads)
    cache = ScoreCache(default_cache_path())
    OUT.mkdir(parents=True, exist_ok=True)
    old = json.loads((OUT / "results.json").read_text()) if (OUT / "results.json").exists() else {}
    # --only: the entries not refitted here (and those other scripts add, e.g. "output") are kept
    results: dict = {**(old if args.only != "all" else {}), "per_domain": {}, "global": {}, "prompt": {},
                     **({k: old[k] for k in ("per_domain", "global", "prompt") if k in old} if args.only != "all" else {}),
                     "scorer_id": backend.scorer.id, "chunk_chars": CHUNK_CHARS, "max_per_doc": MAX_PER_DOC,
                     "max_units": max_units, "alphas": ALPHAS}
    if args.only in ("all", "domains"):
        await fit_domains(backend, cache, data, max_units, results)
    if args.only in ("all", "prompt"):
        await fit_prompt(backend, cache, results)
    (OUT / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    log(f"wrote {OUT}")


if __name__ == "__main__":
    asyncio.run(main())
