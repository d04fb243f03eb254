"""Print the README's calibration tables from guardrail/data/baselines/results.json (made by make baselines)."""

import json
from pathlib import Path

RES = json.loads((Path(__file__).resolve().parents[1] / "guardrail" / "data" / "baselines" / "results.json").read_text())


def cell(r):
    mark = "" if r["within"] else " **outside**"
    rule = "band" if r["band_applies"] else f"binomial 99 %: {r['expected_flags_99'][0]}–{r['expected_flags_99'][1]} flags"
    return f"{r['flag_rate']:.4f} ({r['flags']}/{r['n']}; {rule}){mark}"


def table(title, rows):
    print(f"\n{title}\n")
    print("| domain | α = 1 % | α = 5 % |")
    print("|---|---|---|")
    for d, v in rows.items():
        r1, r5 = v["rates"]
        print(f"| {d} | {cell(r1)} | {cell(r5)} |")


table("Per-domain baselines, held-back test split:", RES["per_domain"])
table("One global baseline fitted on all seven domains pooled, same test splits:", RES["global"])
table("Prompt-side baseline (benign prompts), held-back split:", RES["prompt"])
if "output" in RES:
    table("Output-side baseline (reference answers scored as replies to their instructions), held-back split:",
          RES["output"])
