"""Fit the comparators' reference (guardrail/data/baselines/eval_reference.json) from training splits only.

CPD Online's token standardization: mean and standard deviation of (surprise - entropy) over the tokens of the
benign prompts of the training split (prompts/benign.jsonl).  Jain et al.'s and Alon & Kamfonas' threshold
rule: the largest value over plain harmful prompts (AdvBench, prompts/harmful_plain.jsonl), training split.
Part of `make baselines`; scores come from the cache.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from guardrail.backends.llamacpp import LlamaCppBackend  # noqa: E402
from guardrail.baselines.corpus import read_records  # noqa: E402
from guardrail.baselines.fit import files_sha256  # noqa: E402
from guardrail.baselines.splits import group_hash, split_of  # noqa: E402
from guardrail.batch import score_texts  # noqa: E402
from guardrail.cache import ScoreCache, default_cache_path  # noqa: E402
from guardrail.evaluation.reference import fit_reference, reference_path  # noqa: E402
from guardrail.scoring import TokenArrays  # noqa: E402
from guardrail.types import Side  # noqa: E402


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    benign_p, harmful_p = args.data / "prompts" / "benign.jsonl", args.data / "prompts" / "harmful_plain.jsonl"
    benign = [r.text for r in read_records(benign_p, "prompt") if split_of(r.text) == "train"]
    harmful = [r.text for r in read_records(harmful_p, "prompt") if split_of(r.text) == "train"]
    backend = LlamaCppBackend(None, n_threads=args.threads)
    cache = ScoreCache(default_cache_path())
    segs = await score_texts(backend, benign + harmful, side=Side.PROMPT, cache=cache, errors="skip")
    arrays = [None if s is None else TokenArrays.from_segment(s) for s in segs]
    ref = fit_reference(
        backend.scorer.id, [a for a in arrays[: len(benign)] if a is not None],
        [a for a in arrays[len(benign):] if a is not None],
        sources={"benign": {"file": benign_p.name, "split": "train", "n": len(benign)},
                 "harmful": {"file": harmful_p.name, "split": "train", "n": len(harmful)},
                 "sha256": files_sha256([benign_p, harmful_p])},
        training_groups=[group_hash(t) for t in benign + harmful],
    )
    reference_path().write_text(json.dumps(ref.model_dump(), indent=1) + "\n")
    print(json.dumps({k: v for k, v in ref.model_dump().items() if k != "training_groups"}, indent=1))


if __name__ == "__main__":
    asyncio.run(main())
