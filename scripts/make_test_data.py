"""Copy the small, licensed subsets that tests and the demo need from ../shared/data into the repo.

Deterministic: records are chosen by the SHA-256 of their group key (``goal`` for attacks, the text
otherwise), so re-running gives the same files.  Usage: python scripts/make_test_data.py [SHARED_DATA_DIR]
"""

import hashlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "data"


def h(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def read(rel):
    with open(SRC / rel, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def pick(records, key, n):
    seen, out = set(), []
    for r in sorted(records, key=lambda r: h(key(r))):
        k = key(r)
        if k in seen:
            continue
        seen.add(k)
        out.append(r)
        if len(out) == n:
            break
    return out


def write(rel, records):
    path = ROOT / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"{rel}: {len(records)} records")


gcg = [r for r in read("prompts/attacks_gcg.jsonl") if not r.get("adv_suffix_derived")]
write("tests/data/attacks_gcg_sample.jsonl", pick(gcg, lambda r: r["goal"], 12))
benign = [r for r in read("prompts/benign.jsonl") if 20 <= len(r["prompt"]) <= 400]
write("tests/data/benign_sample.jsonl", pick(benign, lambda r: r["prompt"], 40))
wiki = read("domains/general_wiki.jsonl")
doc = sorted(wiki, key=lambda r: h(r["text"][:200]))[0]
paras = [p.strip() for p in doc["text"].split("\n") if len(p.strip()) > 400]
write("tests/data/fluent_english.jsonl", [{"text": paras[0][:1500], "source": doc.get("source"),
                                           "source_path": doc.get("source_path")}])
# the demo: a benign prompt, and the same prompt with a published GCG suffix appended
suffix = read("prompts/gcg_suffixes.jsonl")[0]
base = next(r for r in pick(benign, lambda r: r["prompt"], 40) if 80 <= len(r["prompt"]) <= 200)
write("examples/data/demo_prompts.jsonl", [
    {"name": "benign", "prompt": base["prompt"], "source": base["source"], "label": "benign"},
    {"name": "benign + GCG suffix", "prompt": base["prompt"] + " " + suffix["adv_suffix"],
     "adv_suffix": suffix["adv_suffix"], "source": base["source"] + " + " + suffix["source"],
     "label": "adversarial"},
])

# evaluation smoke tests: records of the TEST split only (by the baselines' split rule), so that `guardrail eval`
# keeps them (records of training groups are dropped)
sys.path.insert(0, str(ROOT))
from guardrail.baselines.splits import split_of  # noqa: E402


def test_split(records, key, n, max_chars=None, field="prompt"):
    ok = [r for r in records if split_of(key(r)) == "test" and (max_chars is None or len(r[field]) <= max_chars)]
    return pick(ok, key, n)


rs = read("prompts/attacks_random_search.jsonl")
write("tests/data/eval_prompts.jsonl",
      test_split(benign, lambda r: r["prompt"], 40)
      + test_split(gcg, lambda r: r["goal"], 8)
      + test_split([r for r in rs if r["suffix_kind"] == "filler"], lambda r: r["goal"], 3)
      + test_split([r for r in rs if r["suffix_kind"] == "gibberish"], lambda r: r["goal"], 3)
      + test_split(read("prompts/harmful_plain.jsonl"), lambda r: r["prompt"], 6))
ref_out = read("outputs/reference_outputs.jsonl")
degen = [r for r in read("outputs/degenerate_candidates.jsonl") if r["output"].strip()]
write("tests/data/eval_outputs.jsonl",
      test_split(ref_out, lambda r: r["instruction"], 12, max_chars=700, field="output")
      + test_split(degen, lambda r: r["instruction"], 8, max_chars=900, field="output"))
mqa = read("domains/medical_qa.jsonl")
write("tests/data/calibration/medical_qa.jsonl", test_split(mqa, lambda r: r["text"], 60, max_chars=1200,
                                                            field="text"))

# the drift monitor's real-data test: another domain's text (Python source, CPython 3.11 stdlib, PSF-2.0): 60 of
# the code_python baseline's held-back units, cut as it cuts them, in the order scripts/drift_eval.py uses
sys.path.insert(0, str(ROOT / "scripts"))
from drift_eval import held_back  # noqa: E402

write("tests/data/drift/code_python.jsonl", [{"text": t, "source": "CPython 3.11.7 standard library (PSF-2.0)"}
                                             for t in held_back(SRC, "code_python", 60)])
