"""Print the calibration tables of docs/baselines.md from guardrail/data/baselines/results.json (made by make baselines)."""

import json
from pathlib import Path

DIR = Path(__file__).resolve().parents[1] / "guardrail" / "data" / "baselines"
RES = json.loads((DIR / "results.json").read_text())


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


def ablation(title, rows):
    print(f"\n{title}\n")
    print("| domain | cross-conformal (shipped) α = 1 % | α = 5 % | split conformal α = 1 % | α = 5 % |")
    print("|---|---|---|---|---|")
    for d, v in rows.items():
        if "split_conformal_rates" in v:
            cells = [f"{r['flags']}/{r['n']}{'' if r['within'] else ' **outside**'}"
                     for r in (*v["rates"], *v["split_conformal_rates"])]
            print(f"| {d} | " + " | ".join(cells) + " |")


table("Per-domain baselines, held-back test split:", RES["per_domain"])
table("One global baseline fitted on all seven domains pooled, same test splits:", RES["global"])
table("Prompt-side baseline (benign prompts), held-back split:", RES["prompt"])
if "output" in RES:
    table("Output-side baseline (reference answers scored as replies to their instructions), held-back split:",
          RES["output"])
ablation("Calibration method, same features and test splits (flags / n):", {**RES["per_domain"], **RES["prompt"]})

print("\nRouter accuracy on chunks of held-back documents:\n")
print("| domain | n | top-1 | routed (≥ 0.5 confidence) | fell back |")
print("|---|---|---|---|---|")
for d, a in json.loads((DIR / "router.json").read_text())["accuracy"].items():
    print(f"| {d} | {int(a['n'])} | {a['top1']:.3f} | {a['routed']:.3f} | {a['fallback']:.3f} |")
