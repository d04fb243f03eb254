"""How long a run of identical consecutive tokens gets in benign text, and in the '!'-filler attack.

``same_run`` (guardrail/baselines/features.py) counts how far a text's longest run of identical consecutive
tokens goes beyond ``SAME_RUN_FREE``.  The free count is chosen here, on development text only: for every
benign kind of text in ../shared/data (the seven domain corpora cut into 1,500-character pieces, reference and
ChatGPT answers, human-written jailbreak templates: none of them in the prompt baseline's fitting corpus) and
every source of the broad benign prompt corpus (data/prompts), the share of texts whose longest run reaches
5, 8, 12, 16 and 20 tokens and the longest run seen; and the same for the random-search filler attacks (a run
of ``!`` tokens, JailbreakBench).  Only the embedded model's tokenizer is needed (no scoring): seconds.

Writes eval/shift/run_lengths.json and prints the table.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from guardrail.backends.llamacpp import LlamaCppBackend  # noqa: E402
from guardrail.baselines.features import SAME_RUN_FREE  # noqa: E402

DOMAINS = ["general_wiki", "general_chat", "code_python", "legal_contracts", "medical_qa", "medical_abstracts",
           "support_dialogues"]
PIECE = 1500  # characters: domain documents are cut into pieces about a long prompt's size
PER_KIND = 3000
LEVELS = (5, 8, 12, 16, 20)


def jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def longest_run(ids: list[int]) -> int:
    best = cur = 1 if ids else 0
    for a, b in itertools.pairwise(ids):
        cur = cur + 1 if a == b else 1
        best = max(best, cur)
    return best


def kinds(shared: Path, corpus: Path) -> dict[str, tuple[str, list[str]]]:
    out: dict[str, tuple[str, list[str]]] = {}
    for d in DOMAINS:
        texts = [r["text"][i:i + PIECE] for r in jsonl(shared / "domains" / f"{d}.jsonl")
                 for i in range(0, len(r["text"]), PIECE)]
        out[d] = ("benign", texts[:PER_KIND])
    out["reference_outputs"] = ("benign", [r["output"] for r in jsonl(shared / "outputs" / "reference_outputs.jsonl")])
    out["halueval_chatgpt"] = ("benign", [r["chatgpt_response"]
                                          for r in jsonl(shared / "outputs" / "halueval_general.jsonl")])
    out["jailbreaks_humanwritten"] = ("benign", [r["prompt"]
                                                 for r in jsonl(shared / "prompts" / "jailbreaks_humanwritten.jsonl")])
    for path in sorted(corpus.glob("*.jsonl")):
        out[f"prompts/{path.stem}"] = ("benign", [r["prompt"] for r in jsonl(path)])
    out["filler_attacks"] = ("attack", [r["prompt"] for r in jsonl(shared / "prompts" / "attacks_random_search.jsonl")
                                        if "!!!!" in r["prompt"].replace(" ", "")])
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--corpus", default=str(ROOT / "data" / "prompts"))
    ap.add_argument("--out", default=str(ROOT / "eval" / "shift" / "run_lengths.json"))
    args = ap.parse_args()
    engine = LlamaCppBackend(n_threads=1).engine
    rows = {}
    for name, (label, texts) in kinds(Path(args.shared), Path(args.corpus)).items():
        runs = np.array([longest_run(engine.tokenize(t.encode("utf-8")).tolist()) for t in texts if t.strip()])
        rows[name] = {"label": label, "n": int(runs.size), "max": int(runs.max()), "min": int(runs.min()),
                      **{f"share_run_ge_{k}": round(float(np.mean(runs >= k)), 5) for k in LEVELS}}
        print(f"{name:32s} {label:7s} n={runs.size:5d} " + " ".join(
            f">={k}: {rows[name][f'share_run_ge_{k}']:.4f}" for k in LEVELS) + f"  min {runs.min()} max {runs.max()}")
    benign = [r for r in rows.values() if r["label"] == "benign"]
    summary = {"benign_texts": sum(r["n"] for r in benign), "benign_longest": max(r["max"] for r in benign),
               "filler_shortest": rows["filler_attacks"]["min"], "same_run_free": SAME_RUN_FREE}
    print(json.dumps(summary))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"summary": summary, "kinds": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
