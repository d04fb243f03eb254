"""Fit the shipped domain router on the train split of the domain corpora; measure accuracy per domain on
chunks of held-back (test split) documents.  Needs no model.  Part of `make baselines`.

Writes guardrail/data/baselines/router.json (accuracy inside it) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from guardrail.baselines.corpus import cut_units, read_records  # noqa: E402
from guardrail.baselines.router import fit_router  # noqa: E402
from guardrail.baselines.splits import group_hash, split_of  # noqa: E402

DOMAINS = ["general_wiki", "general_chat", "code_python", "legal_contracts", "medical_qa", "medical_abstracts",
           "support_dialogues"]
CHUNK_CHARS = [256, 512, 1024]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--out", default=str(ROOT / "guardrail" / "data" / "baselines" / "router.json"))
    args = ap.parse_args()
    train_x, train_y, test = [], [], {}
    for d in DOMAINS:
        recs = read_records(Path(args.data) / "domains" / f"{d}.jsonl")
        recs.sort(key=lambda r: group_hash("order\x00" + r.group))  # not the split hash (see fit_baselines.py)
        units = cut_units(recs, CHUNK_CHARS, max_per_doc=16, max_units=None)
        tr = [u.text for u in units if split_of(u.group) == "train"][:1500]
        train_x += tr
        train_y += [d] * len(tr)
        test[d] = [u.text for u in units if split_of(u.group) == "test"][:600]
    router = fit_router(train_x, train_y)
    acc = {}
    for d, texts in test.items():
        routes = [router.route(t) for t in texts]
        n = len(routes)
        acc[d] = {"n": n, "top1": sum(r.top == d for r in routes) / n,
                  "routed": sum(r.domain == d for r in routes) / n,
                  "fallback": sum(r.routed_by == "fallback" for r in routes) / n}
        top = Counter(r.top for r in routes).most_common(3)
        print(f"{d:18s} n={n:4d} top1={acc[d]['top1']:.3f} routed={acc[d]['routed']:.3f} "
              f"fallback={acc[d]['fallback']:.3f} confusions={top}")
    router.accuracy = acc
    router.save(args.out)
    print(json.dumps({"n_train": len(train_x), "accuracy": acc}))


if __name__ == "__main__":
    main()
