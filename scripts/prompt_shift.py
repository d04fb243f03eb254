"""Prompt screening under distribution shift: leave-one-source-out tables and attack figures per recipe.

For the broad benign corpus (data/prompts/*.jsonl, one file a source) and the development attack sets
(../shared/data/prompts), every recipe (signals, detector, per-source cap) is fitted leaving each source out
and measured on it; the full fit (every source) gives the attack figures: TPR at 0.1 / 1 % FPR over the
held-back benign units, ranked by the continuous tail statistic (-log tail_p), filler TPR and the plain
harmful flag rate at the operating alpha.  The shipped baseline of the previous release is evaluated on every
source as the ablation.  Scores come from the score cache.

Writes eval/shift/results.json (and prints a summary).  ``--recipes a,b`` limits the recipes run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from guardrail.backends.llamacpp import LlamaCppBackend  # noqa: E402
from guardrail.baselines.corpus import read_records  # noqa: E402
from guardrail.baselines.features import tail_of  # noqa: E402
from guardrail.baselines.fit import cross_calibrate, featurize  # noqa: E402
from guardrail.baselines.model import load_baseline  # noqa: E402
from guardrail.baselines.splits import first_by_group, group_hash, split_of  # noqa: E402
from guardrail.cache import ScoreCache, default_cache_path  # noqa: E402
from guardrail.evaluation.metrics import tpr_at_fpr  # noqa: E402
from guardrail.evaluation.shift import SourceFeats, leave_one_source_out, rates, summarise  # noqa: E402
from guardrail.types import Side  # noqa: E402

ALPHAS = [0.01, 0.05]
WIDTHS = (8, 16, 32)


@dataclass(frozen=True)
class PromptRecipe:
    signals: tuple[str, ...]
    detector: str = "none"  # "none", "robust_cov" (benign only), "logistic" (benign vs training attacks)
    max_per_source: int | None = 600  # units per source at most (by group hash): no source dominates
    max_buckets: int = 1
    trend: bool = False
    length_penalty: float = 0.0  # excess_cusum - c log(n / n0): a CUSUM's maximum grows with the tokens it runs over
    length_free: int = 1  # n0: no penalty up to this many tokens

    def describe(self) -> dict:
        return {"signals": list(self.signals), "detector": self.detector, "max_per_source": self.max_per_source,
                "max_buckets": self.max_buckets, "trend": self.trend, "length_penalty": self.length_penalty,
                "length_free": self.length_free}

    def transform(self, f: dict) -> dict:
        if not self.length_penalty:
            return f
        n0 = float(self.length_free)
        return {**f, "excess_cusum": f["excess_cusum"] - self.length_penalty * math.log(max(f["n_scored"], n0) / n0)}

    def fitter(self, attacks):
        tails = {s: tail_of(s) for s in self.signals}
        if self.detector != "none":
            tails["detector"] = "high"

        def fit(feats, groups):
            return cross_calibrate(list(feats), list(groups), tails, min(ALPHAS), self.detector != "none",
                                   attacks if self.detector == "logistic" else None, 5, self.max_buckets, self.trend)
        return fit


OLD = ("max_w8", "max_w32", "min_w16", "whole_nll", "distinct", "repeat_run", "surprise_cusum")
NEW = ("excess_cusum", "same_run")  # scripts/fit_baselines.py PROMPT_SIGNALS
PROMPT_RECIPES = {
    # the previous release's recipe, refitted on the broad corpus (all of each source, as it was fitted)
    "previous_recipe": PromptRecipe(OLD, detector="logistic", max_per_source=None, max_buckets=4, trend=True),
    "shipped": PromptRecipe(NEW),
    # ablations: one change each from the shipped recipe
    "shipped_4_length_buckets": PromptRecipe(NEW, max_buckets=4, trend=True),
    "shipped_with_logistic_detector": PromptRecipe(NEW, detector="logistic"),
    "shipped_drift_1_nat": PromptRecipe(("surprise_cusum", "same_run")),
    "previous_signals_1_bucket": PromptRecipe(OLD, detector="logistic"),
    # length-penalised CUSUM (tried 2026-12-01 against the translated and long sources): it trades them against
    # the short Debian descriptions
    "shipped_length_penalty_1": PromptRecipe(NEW, length_penalty=1.0),
    "shipped_length_penalty_2": PromptRecipe(NEW, length_penalty=2.0),
    "shipped_length_penalty_3": PromptRecipe(NEW, length_penalty=3.0),
    # the penalty a negative-drift CUSUM's maximum calls for (1/theta = 3.9 nats per log-token, see
    # docs/prompt-screening.md), only past n0 tokens: below it one token's excess, not the number of
    # excursions, decides the maximum (2026-12-02, tenth session)
    "shipped_length_penalty_3.9_from_64": PromptRecipe(NEW, length_penalty=3.9, length_free=64),
    "shipped_length_penalty_3.9_from_128": PromptRecipe(NEW, length_penalty=3.9, length_free=128),
    "shipped_length_penalty_2_from_64": PromptRecipe(NEW, length_penalty=2.0, length_free=64),
}
# the previous release's shipped prompt baseline (fitted on the development benign prompts only)
BEFORE = ("e334c05", "guardrail/data/baselines/general.prompt.json")


def cap_per_source(s: SourceFeats, cap: int | None) -> SourceFeats:
    if cap is None or len(s.feats) <= cap:
        return s
    order = first_by_group(s.groups, cap)
    return SourceFeats([s.feats[i] for i in order], [s.groups[i] for i in order])


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


async def feats_of(backend, cache, recs):
    return await featurize(backend, [r.text for r in recs], Side.PROMPT, WIDTHS, cache)


def attack_figures(cal, benign_test, attacks, alpha: float) -> dict:
    """TPR at fixed FPR (continuous statistic) over held-back benign units, and flag rates at ``alpha``."""
    def stat(f):
        return -math.log(cal.assess(f, alpha).tail_p)

    neg = np.array([stat(f) for f in benign_test])
    out = {"n_benign_test": len(neg)}
    for name, fs in attacks.items():
        pos = np.array([stat(f) for f in fs])
        row = {"n": len(fs), "flag_rate": round(float(np.mean([cal.assess(f, alpha).flag for f in fs])), 4)}
        if name != "harmful_plain":
            for fpr in (0.001, 0.01):
                row[f"tpr_at_{fpr:g}"] = round(float(tpr_at_fpr(np.r_[neg, pos], np.r_[np.zeros(len(neg)), np.ones(len(pos))], fpr)), 4)
        out[name] = row
    return out


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--corpus", default=str(ROOT / "data" / "prompts"))
    ap.add_argument("--recipes", default=",".join(PROMPT_RECIPES))
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=str(ROOT / "eval" / "shift" / "results.json"))
    ap.add_argument("--test-signals", default=None,
                    help="also write every benign unit's signal vector (no text) here, for the recalibration test")
    args = ap.parse_args()
    data = Path(args.data)
    backend = LlamaCppBackend(n_threads=args.threads)
    cache = ScoreCache(default_cache_path())
    sources: dict[str, SourceFeats] = {}
    for path in sorted(Path(args.corpus).glob("*.jsonl")):
        recs = read_records(path, "prompt", "group")
        fs = await feats_of(backend, cache, recs)
        sources[path.stem] = SourceFeats([f for f in fs if f], [r.group for r, f in zip(recs, fs, strict=True) if f])
        log(f"{path.stem}: {len(sources[path.stem].feats)} scorable of {len(recs)}")
    if args.test_signals:
        keep = ("n_scored", *PROMPT_RECIPES["shipped"].signals)
        with open(args.test_signals, "w", encoding="utf-8") as f:
            for name, s in sources.items():
                for feat, g in zip(s.feats, s.groups, strict=True):
                    f.write(json.dumps({"source": name, "group": group_hash(g),
                                        "features": {k: round(feat[k], 6) for k in keep}}) + "\n")
    attack_recs = {}
    for name, file, group in (("gcg", "attacks_gcg", "goal"), ("random_search", "attacks_random_search", "goal"),
                              ("harmful_plain", "harmful_plain", None)):
        recs = read_records(data / "prompts" / f"{file}.jsonl", "prompt", group)
        attack_recs[name] = recs
    train_attacks, test_attacks = [], {}
    for name, recs in attack_recs.items():
        fs = await feats_of(backend, cache, recs)
        for r, f in zip(recs, fs, strict=True):
            if f is None:
                continue
            kind = "filler" if name == "random_search" and "!!!!" in r.text.replace(" ", "") else name
            if name != "harmful_plain" and split_of(r.group) == "train":
                train_attacks.append(f)
            elif split_of(r.group) == "test":
                test_attacks.setdefault(kind, []).append(f)
        log(f"{name}: {len(recs)} records")
    benign_test = [f for s in sources.values() for f, g in zip(s.feats, s.groups, strict=True) if split_of(g) == "test"]
    results: dict = {"alphas": ALPHAS, "n_per_source": {k: len(v.feats) for k, v in sources.items()},
                     "attacks_n": {k: len(v) for k, v in test_attacks.items()}, "recipes": {}}
    # the previous release's shipped baseline, on every source (dev sources: its held-back groups only)
    before = subprocess.run(["git", "-C", str(ROOT), "show", f"{BEFORE[0]}:{BEFORE[1]}"], capture_output=True)
    if before.returncode == 0:
        old_path = Path(tempfile.mkdtemp()) / "before.json"
        old_path.write_bytes(before.stdout)
        old = load_baseline(old_path)
        trained = set(old.training_groups)
        table = {}
        for name, s in sources.items():
            fs = [f for f, g in zip(s.feats, s.groups, strict=True) if group_hash(g) not in trained]
            table[name] = rates(lambda f, a: old.assess(f, a).flag, fs, ALPHAS)
        results["shipped_before"] = {"baseline": old.id, "commit": BEFORE[0], **summarise(table, ALPHAS)}
        log("shipped before: highest " + json.dumps(results["shipped_before"]["highest"]))
    for rname in args.recipes.split(","):
        recipe: PromptRecipe = PROMPT_RECIPES[rname]
        t0 = time.time()
        tf = recipe.transform
        fit = recipe.fitter([tf(f) for f in train_attacks])
        mine = {k: SourceFeats([tf(f) for f in v.feats], v.groups) for k, v in sources.items()}
        capped = {k: cap_per_source(v, recipe.max_per_source) for k, v in mine.items()}
        loso = leave_one_source_out(mine, fit, ALPHAS, fit_on=capped)
        # full fit on the fitting groups of every source; attacks measured against the held-back benign units
        pool = [(f, g) for c in capped.values() for f, g in zip(c.feats, c.groups, strict=True) if split_of(g) != "test"]
        cal = fit([f for f, _ in pool], [g for _, g in pool])
        figs = {f"{a:g}": attack_figures(cal, [tf(f) for f in benign_test],
                                         {k: [tf(f) for f in v] for k, v in test_attacks.items()}, a) for a in ALPHAS}
        results["recipes"][rname] = {"recipe": recipe.describe(), "loso": loso, "attacks": figs,
                                     "resolution": cal.resolution(), "seconds": round(time.time() - t0, 1)}
        w = loso["highest"]
        log(f"{rname}: highest {w} all_within={loso['all_within']}  " + "  ".join(
            f"{k}: " + ",".join(f"{s}={r[k]['rate']:.3f}" for s, r in loso["sources"].items()) for k in ("0.01", "0.05")))
        log(f"{rname}: attacks " + json.dumps(figs["0.01"]))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    log(f"wrote {args.out}")


if __name__ == "__main__":
    asyncio.run(main())
