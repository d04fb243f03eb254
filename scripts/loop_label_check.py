"""How well the loop rule separates the stream evaluation's generations (evidence for docs/proxy.md#streaming).

The rule (guardrail.loops: an n-gram of >= 3 tokens occurring >= 4 times within the last 100 tokens) labels the
embedded model's 80-token generations as loops (positives) or normal (calibration and false-abort negatives).
This prints, for the calibration and test generations at T = 0 and 0.7 (scripts/stream_generations.py stores
them): the share of each class with a verbatim repeated stretch of k tokens (a stretch that occurs twice), and
the share whose copy count -- the most positions, within 32 consecutive tokens, whose 4-gram occurred earlier in
the text -- exceeds the 99th percentile and the maximum of the normal calibration generations of its own
temperature (the stream rule is calibrated per temperature), how many of those the shipped stream rule cuts
already (replayed at abort_p = 0.01), and how many of the labelled loops hold code.
Reads the stored generations only (seconds).

    python scripts/loop_label_check.py [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from stream_generations import MAX_TOKENS, plan  # noqa: E402

from guardrail.baselines.features import token_keys  # noqa: E402
from guardrail.baselines.model import load_baseline  # noqa: E402
from guardrail.baselines.registry import shipped  # noqa: E402
from guardrail.evaluation.generations import GenerationStore, seed_for  # noqa: E402
from guardrail.evaluation.stream_eval import replay  # noqa: E402


def keys(g) -> list[int]:
    return token_keys(g).tolist()  # (token_keys reads only the tokens' bytes: a stored generation has them)


def longest_repeat(k: list[int]) -> int:
    """The longest stretch that occurs twice (at any distance; an overlap counts up to the distance)."""
    best = 0
    for lag in range(1, len(k)):
        run = 0
        for i in range(lag, len(k)):
            run = run + 1 if k[i] == k[i - lag] else 0
            best = max(best, min(run, lag))
    return best


def copy_count(k: list[int], n: int = 4, window: int = 32) -> int:
    seen: set[tuple[int, ...]] = set()
    flags = []
    for i in range(len(k)):
        g = tuple(k[max(0, i - n + 1): i + 1])
        flags.append(len(g) == n and g in seen)
        if len(g) == n:
            seen.add(g)
    c = np.concatenate(([0], np.cumsum(flags)))
    w = min(window, len(flags))
    return int((c[w:] - c[:-w]).max()) if flags else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    store = GenerationStore()
    base = {t: load_baseline(shipped()[(n, "output")]) for t, n in ((0.0, "general~t0"), (0.7, "general~t07"))}
    sid = base[0.0].scorer_id
    gens = {"calib": [], "test": []}
    for role, p, t in plan(250, 300, 60):
        if t <= 1.0:
            g = store.get(sid, p, t, seed_for(p), MAX_TOKENS)
            if g is None:
                raise SystemExit("generations missing: run scripts/stream_generations.py first")
            gens[role].append(g)
    normal_cal = [g for g in gens["calib"] if not g.loop]
    normal = normal_cal + [g for g in gens["test"] if not g.loop]
    loops = [g for g in gens["calib"] + gens["test"] if g.loop]
    rep_n = np.array([longest_repeat(keys(g)) for g in normal])
    rep_l = np.array([longest_repeat(keys(g)) for g in loops])
    cc_cal = {t: np.array([copy_count(keys(g)) for g in normal_cal if g.temperature == t]) for t in base}
    q99 = {t: float(np.quantile(c, 0.99)) for t, c in cc_cal.items()}
    top = {t: int(c.max()) for t, c in cc_cal.items()}
    cc_l = np.array([copy_count(keys(g)) for g in loops])
    loop_t = [g.temperature for g in loops]
    cut = np.array([replay(base[g.temperature], g, 0.01, base[g.temperature].stream.check_every)[0] is not None
                    for g in loops])
    above = np.array([c > q99[t] for c, t in zip(cc_l, loop_t, strict=True)])
    above_max = np.array([c > top[t] for c, t in zip(cc_l, loop_t, strict=True)])
    out = {
        "n_normal": len(normal), "n_loops": len(loops), "max_tokens": MAX_TOKENS,
        "verbatim_repeat_share": {str(k): {"normal": round(float((rep_n >= k).mean()), 3),
                                           "loops": round(float((rep_l >= k).mean()), 3)} for k in (6, 8, 10, 12, 16)},
        "copy_count_normal_calib": {f"{t:g}": {"n": int(cc_cal[t].size), "q99": round(q99[t], 2), "max": top[t]}
                                    for t in base},
        "loops_above_normal_q99": round(float(above.mean()), 3), "loops_above_normal_max": round(float(above_max.mean()), 3),
        "n_loops_above_normal_q99": int(above.sum()),
        "loops_cut_at_0.01": int(cut.sum()),
        "loops_above_q99_and_cut": int((above & cut).sum()), "loops_above_q99_not_cut": int((above & ~cut).sum()),
        "loops_with_code": sum("```" in g.text or "def " in g.text for g in loops),
    }
    if args.json:
        print(json.dumps(out, indent=1))
        return
    print(f"{out['n_normal']} normal and {out['n_loops']} loop generations of {MAX_TOKENS} tokens (T = 0 and 0.7)")
    for k, v in out["verbatim_repeat_share"].items():
        print(f"  a stretch of >= {k:>2} tokens repeated verbatim: normal {v['normal']:.1%}, loops {v['loops']:.1%}")
    for t, c in out["copy_count_normal_calib"].items():
        print(f"  copy count (4-grams seen before, most in 32 tokens), normal calibration at T = {t}: q99 {c['q99']}, "
              f"max {c['max']} (n {c['n']})")
    print(f"  loops above their temperature's q99 {out['loops_above_normal_q99']:.1%} "
          f"({out['n_loops_above_normal_q99']}), above its max {out['loops_above_normal_max']:.1%}")
    print(f"  loops cut by the shipped stream rule at 0.01: {out['loops_cut_at_0.01']}; above q99 and cut "
          f"{out['loops_above_q99_and_cut']}, above q99 and not cut {out['loops_above_q99_not_cut']}")
    print(f"  loops holding code: {out['loops_with_code']}")


if __name__ == "__main__":
    main()
