"""Print the evaluation tables of docs/evaluation.md from the JSON documents `make eval` writes into eval/."""

import json
import sys
from pathlib import Path

EVAL = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "eval"


def load(name):
    p = EVAL / name
    return json.loads(p.read_text()) if p.exists() else None


def ci(v):
    return f"[{v[0]:.3f}, {v[1]:.3f}]"


def methods_table(doc, title, groups=False):
    print(f"\n{title} (n = {doc['n']}: {', '.join(f'{k} {v}' for k, v in doc['counts'].items())}; "
          f"dropped as training data: {doc['n_dropped_training']})\n")
    head = "| method | AUROC [95 % CI] | TPR @ 0.1 % FPR [CI] | TPR @ 1 % FPR [CI] | TPR @ 5 % FPR | flag rate at its threshold |"
    print(head)
    print("|---|---|---|---|---|---|")
    for name, m in doc["methods"].items():
        t, c = m["tpr_at_fpr"], m["tpr_at_fpr_ci"]
        rates = ", ".join(f"{k} {v:.3f}" for k, v in m["flag_rate"].items())
        if groups and m["by_group"]:
            rates += "; " + ", ".join(f"{k} TPR {v['tpr']:.3f} (n {v['n']})" for k, v in m["by_group"].items())
        print(f"| {name} | {m['auroc']:.4f} {ci(m['auroc_ci'])} | {t['0.001']:.3f} {ci(c['0.001'])} | "
              f"{t['0.01']:.3f} {ci(c['0.01'])} | {t['0.05']:.3f} | {rates} |")


def localisation_table(doc):
    print("\nLocalisation of the GCG suffix (`adv_suffix`), over the attacks each method flags at its threshold:\n")
    print("| method | n flagged | precision | recall | overlap |")
    print("|---|---|---|---|---|")
    for name, m in doc["methods"].items():
        loc = m["localisation"]
        if loc["n"]:
            print(f"| {name} | {loc['n']} | {loc['precision']:.3f} | {loc['recall']:.3f} | {loc['overlap']:.3f} |")


for name, title, groups in (("prompts_gcg.json", "GCG-suffix prompts vs benign prompts", False),
                            ("prompts_random_search.json", "Random-search attacks vs benign prompts", True),
                            ("outputs_degenerate.json", "Degenerate candidates vs reference answers", False),
                            ("outputs_halueval.json", "HaluEval: hallucinated vs faithful answers", False)):
    doc = load(name)
    if doc is None:
        continue
    methods_table(doc, title, groups)
    if name == "prompts_gcg.json":
        localisation_table(doc)
    cal = doc["methods"].get("guardrail", {}).get("calibration")
    if cal:
        print(f"\nOurs as a probability (1 - conformal p-value): ECE {cal['ece']:.3f}")
doc = load("calibration.json")
if doc:
    print("\nRealised false-alarm rate per domain (held-back documents; `outside` = beyond the check of the Baselines issue):\n")
    alphas = doc["alphas"]
    print("| baseline | domain | " + " | ".join(f"α = {a:g}" for a in alphas) + " |")
    print("|---|---|" + "---|" * len(alphas))
    for key, label in (("domains", "per-domain"), ("global", "global")):
        for d, v in doc.get(key, {}).items():
            cells = " | ".join(f"{r['flag_rate']:.4f} ({r['flags']}/{r['n']}){'' if r['within'] else ' **outside**'}"
                               for r in v["rates"])
            print(f"| {label} | {d} | {cells} |")
