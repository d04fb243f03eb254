"""Markdown tables of eval/shift/results.json (scripts/prompt_shift.py) for docs/prompt-screening.md."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cell(row: dict, alpha: str) -> str:
    r = row[alpha]
    a = float(alpha)
    mark = "" if r["within"] else (" **high**" if r["rate"] > 2 * a else " low")
    return f"{100 * r['rate']:.1f} % ({r['flags']}/{r['n']}){mark}"


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "eval" / "shift" / "results.json"
    d = json.loads(path.read_text())
    before = d.get("shipped_before")
    prev, new = d["recipes"]["previous_recipe"]["loso"], d["recipes"]["shipped"]["loso"]
    cols = [("shipped before, its held-back records", before["sources"] if before else None),
            ("previous recipe, left out", prev["sources"]), ("**shipped now, left out**", new["sources"])]
    print("| source | " + " | ".join(f"{name} α = 1 % | α = 5 %" for name, t in cols if t) + " |")
    print("|---|" + "---|---|" * sum(1 for _, t in cols if t))
    for src in new["sources"]:
        print(f"| {src} | " + " | ".join(f"{cell(t[src], '0.01')} | {cell(t[src], '0.05')}" for _, t in cols if t) + " |")
    print("| **highest** | " + " | ".join(
        f"{x['highest']['0.01']['source']} {100 * x['highest']['0.01']['rate']:.1f} % | "
        f"{x['highest']['0.05']['source']} {100 * x['highest']['0.05']['rate']:.1f} %"
        for x in (before, prev, new) if x) + " |")
    print()
    print("| recipe | highest α = 1 % | highest α = 5 % | GCG TPR @ 0.1 % FPR | random search | filler | harmful flagged at 1 % |")
    print("|---|---|---|---|---|---|---|")
    for name, r in d["recipes"].items():
        h, a = r["loso"]["highest"], r["attacks"]["0.01"]
        print(f"| {name} | {h['0.01']['source']} {100 * h['0.01']['rate']:.1f} % | {h['0.05']['source']} "
              f"{100 * h['0.05']['rate']:.1f} % | {a['gcg']['tpr_at_0.001']:.3f} | {a['random_search']['tpr_at_0.001']:.3f} "
              f"| {a['filler']['tpr_at_0.001']:.3f} | {100 * a['harmful_plain']['flag_rate']:.1f} % |")


if __name__ == "__main__":
    main()
