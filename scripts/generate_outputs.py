"""The embedded model's own generations over benign chat prompts, for output baselines of its own regime.

What the Guard sees at run time is the serving model's sampled output scored with its own raw logprobs; a
baseline fitted on other writers' answers teacher-forced as replies is another distribution (greedy SmolLM2
text is far more predictable).  This writes, per (prompt, temperature), one generation with its signal vector
to ``eval/generations/<scorer slug>.jsonl`` (resumable: existing (prompt, temperature, seed, max_tokens) keys
are kept), from the chat-prompt sources of data/prompts (the Debian and code sources are not chat requests).
Seeds are derived from the prompt.  Loops (an n-gram of >= 3 tokens repeated >= 4 times in the last 100
tokens) are labelled, so that fitting can keep them out.

    python scripts/generate_outputs.py --temperatures 0,0.7 --per-temperature 150 --max-tokens 80
    python scripts/generate_outputs.py --temperatures 0,0.7 --per-temperature 60 --max-tokens 80 --split test
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from guardrail.backends.base import GenerationRequest, Message  # noqa: E402
from guardrail.backends.llamacpp import LlamaCppBackend  # noqa: E402
from guardrail.baselines.corpus import read_records  # noqa: E402
from guardrail.baselines.features import features, token_keys  # noqa: E402
from guardrail.baselines.fit import DEFAULT_WIDTHS  # noqa: E402
from guardrail.baselines.splits import first_by_group, group_hash, split_of  # noqa: E402
from guardrail.evaluation.generations import seed_for  # noqa: E402
from guardrail.loops import has_loop  # noqa: E402

CHAT_SOURCES = ("alpacaeval", "alpaca_inputs", "self_instruct", "certified_safe", "banking77", "sgd_customer")


def prompts(n: int, split: str | None = None) -> list[str]:
    """The first ``n`` chat prompts in the order of the split hash (all of them land in the fitting splits:
    the lowest hashes), or, with ``split``, the first ``n`` of that split in an order salted apart."""
    recs = [r for s in CHAT_SOURCES for r in read_records(ROOT / "data" / "prompts" / f"{s}.jsonl", "prompt", "group")]
    if split is None:
        return [recs[i].text for i in first_by_group([r.text for r in recs], n)]
    texts = sorted({r.text for r in recs if split_of(r.text) == split}, key=lambda t: group_hash("order\x00" + t))
    return texts[:n]




async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--temperatures", default="0,0.7")
    ap.add_argument("--per-temperature", type=int, default=280)
    ap.add_argument("--max-tokens", type=int, default=80)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--split", choices=["train", "calib", "test"], default=None,
                    help="take the prompts from this split (the held-back test split for realised rates)")
    args = ap.parse_args()
    backend = LlamaCppBackend(None, n_threads=args.threads)
    out = args.out or ROOT / "eval" / "generations" / f"{backend.scorer.model}.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if out.exists():
        for line in out.read_text(encoding="utf-8").splitlines():
            d = json.loads(line)
            done.add((d["prompt"], d["temperature"], d["seed"], d["max_tokens"]))
    ps = prompts(args.per_temperature, args.split)
    with out.open("a", encoding="utf-8") as f:
        for t in (float(x) for x in args.temperatures.split(",")):
            t0, n_new, n_tok = time.time(), 0, 0
            for p in ps:
                key = (p, t, seed_for(p), args.max_tokens)
                if key in done:
                    continue
                req = GenerationRequest(messages=[Message(role="user", content=p)], max_tokens=args.max_tokens,
                                        temperature=t, seed=key[2], top_logprobs=0)
                gen = await backend.generate(req)
                seg = gen.output
                f.write(json.dumps({
                    "prompt": p, "temperature": t, "seed": key[2], "max_tokens": args.max_tokens,
                    "scorer": backend.scorer.id, "text": seg.text, "finish_reason": gen.finish_reason,
                    "n_tokens": len(seg.tokens), "loop": has_loop(token_keys(seg).tolist()),
                    "features": features(seg, DEFAULT_WIDTHS),
                }, ensure_ascii=False) + "\n")
                f.flush()
                n_new += 1
                n_tok += len(seg.tokens)
            dt = time.time() - t0
            print(f"T={t}: {n_new} generations, {n_tok} tokens in {dt:.0f} s ({n_tok / max(dt, 1e-9):.1f} tok/s)",
                  flush=True)
    await backend.aclose()


if __name__ == "__main__":
    asyncio.run(main())
