"""Calibrate the whole-stream early-abort rule of the shipped own-generation output baselines (general~t0,
general~t07) on the embedded model's normal generations apart from the ones those baselines were fitted on
(scripts/stream_generations.py stores them; loops are kept out: not normal).  Rewrites the baseline files with
their ``stream`` calibration and writes eval/stream/calibration.json.

    python scripts/stream_generations.py      # first: the generations (~45 min on 2 cores)
    python scripts/fit_stream_calibration.py  # seconds
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from stream_generations import MAX_TOKENS, plan  # noqa: E402

from guardrail.baselines.model import load_baseline, save_baseline  # noqa: E402
from guardrail.baselines.registry import shipped  # noqa: E402
from guardrail.baselines.stream_calibration import calibrate_stream  # noqa: E402
from guardrail.evaluation.generations import GenerationStore, seed_for  # noqa: E402

CHECK_EVERY = 8  # tokens between checkpoints: the smallest window width, so a burst is judged within it


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calib", type=int, default=250)
    ap.add_argument("--store", type=Path, default=None)
    ap.add_argument("--check-every", type=int, default=CHECK_EVERY)
    args = ap.parse_args()
    store = GenerationStore(args.store)
    summary: dict = {"check_every": args.check_every, "calibrated_length": MAX_TOKENS, "regimes": {}}
    for (name, side), path in sorted(shipped().items()):
        if side != "output" or not name.startswith("general~"):
            continue
        b = load_baseline(path)
        t = float(b.unit["temperature"])
        prompts = [p for role, p, temp in plan(args.calib, 0, 0) if role == "calib" and temp == t]
        gens = [store.get(b.scorer_id, p, t, seed_for(p), MAX_TOKENS) for p in prompts]
        if any(g is None for g in gens):
            raise SystemExit(f"{sum(g is None for g in gens)} calibration generations at T={t:g} are not stored: "
                             "run scripts/stream_generations.py first")
        normal = [g for g in gens if not g.loop]  # type: ignore[union-attr]
        cal = calibrate_stream(b, [g.tokens for g in normal], check_every=args.check_every, length=MAX_TOKENS,
                               temperatures=[t], notes=[
                                   f"{len(normal)} normal generations of the embedded model at T={t:g}, max_tokens "
                                   f"{MAX_TOKENS}, prompts of the chat sources' fitting splits the baseline was not "
                                   f"fitted on; {len(gens) - len(normal)} loops kept out"])
        b.stream = cal
        save_baseline(b, path)
        summary["regimes"][f"{t:g}"] = {"baseline": b.id, "n": cal.n, "loops_kept_out": len(gens) - len(normal),
                                        "threshold": {f"{a:g}": cal.threshold(a) for a in (0.01, 0.05)},
                                        "resolution": cal.resolution}
        print(name, json.dumps(summary["regimes"][f"{t:g}"]), flush=True)
    # eval/generations/fit.json names the regime baselines by id: the calibration changed their content
    fit_path = ROOT / "eval" / "generations" / "fit.json"
    if fit_path.exists():
        fit = json.loads(fit_path.read_text())
        for key, reg in summary["regimes"].items():
            if key in fit.get("regimes", {}):
                fit["regimes"][key]["baseline"] = reg["baseline"]
        fit_path.write_text(json.dumps(fit, indent=1) + "\n")
    out = ROOT / "eval" / "stream" / "calibration.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
