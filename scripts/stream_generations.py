"""Generate (and store, guardrail.evaluation.generations) the embedded model's own generations that calibrate and
evaluate the whole-stream abort rule: prompts from the chat sources of data/prompts.

* calibration: fitting-split prompts (train/calib) that the own-generation baselines were NOT fitted on (those in
  eval/generations/<model>.jsonl are skipped), ``--calib N`` per temperature;
* evaluation: held-back test-split prompts, ``--test N`` per temperature, and ``--salad N`` at temperature 1.8.

    python scripts/stream_generations.py --calib 300 --test 300 --salad 100     # ~35 min on 2 cores
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
sys.path.insert(0, str(ROOT / "scripts"))

from generate_outputs import CHAT_SOURCES  # noqa: E402

from guardrail.backends.llamacpp import LlamaCppBackend  # noqa: E402
from guardrail.baselines.corpus import read_records  # noqa: E402
from guardrail.baselines.splits import split_of  # noqa: E402
from guardrail.evaluation.generations import GenerationStore, ordered_prompts, seed_for  # noqa: E402

MAX_TOKENS = 80  # the own-generation baselines' unit


def chat_prompts(splits: tuple[str, ...], exclude: set[str], n: int, salt: str) -> list[str]:
    recs = [r for s in CHAT_SOURCES for r in read_records(ROOT / "data" / "prompts" / f"{s}.jsonl", "prompt", "group")]
    return ordered_prompts([r.text for r in recs if split_of(r.text) in splits and r.text not in exclude], salt)[:n]


def plan(calib: int, test: int, salad: int) -> list[tuple[str, str, float]]:
    """(role, prompt, temperature) of every generation the stream calibration and evaluation use."""
    gen_file = next((ROOT / "eval" / "generations").glob("smollm2*.jsonl"))
    fitted = {json.loads(line)["prompt"] for line in gen_file.read_text(encoding="utf-8").splitlines() if line.strip()}
    cal = chat_prompts(("train", "calib"), fitted, calib, "stream-calib")
    tst = chat_prompts(("test",), set(), max(test, salad), "stream-test")
    out = [("calib", p, t) for t in (0.0, 0.7) for p in cal]
    out += [("test", p, t) for t in (0.0, 0.7) for p in tst[:test]]
    out += [("test", p, 1.8) for p in tst[:salad]]
    return out


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calib", type=int, default=300)
    ap.add_argument("--test", type=int, default=300)
    ap.add_argument("--salad", type=int, default=100)
    ap.add_argument("--store", type=Path, default=None)
    args = ap.parse_args()
    store = GenerationStore(args.store)
    be = LlamaCppBackend()
    t0, new, toks = time.time(), 0, 0
    todo = plan(args.calib, args.test, args.salad)
    for i, (_role, p, t) in enumerate(todo):
        g, fresh = await store.generate(be, p, t, seed_for(p), MAX_TOKENS)
        new += fresh
        toks += len(g.tokens) if fresh else 0
        if fresh and new % 50 == 0:
            dt = time.time() - t0
            print(f"{i + 1}/{len(todo)}: {new} new, {toks / dt:.1f} tok/s", flush=True)
    print(f"done: {len(todo)} generations ({new} new) in {time.time() - t0:.0f} s; store {store.path}", flush=True)
    be.close()


if __name__ == "__main__":
    asyncio.run(main())
