"""A remote backend's stream judged by the embedded scorer, end to end through the Guard: the false-abort rate of
the every-prefix calibration when checkpoints fall where *another tokenizer's* pieces end.

The whole-stream calibration of the teacher-forced output baseline (scripts/fit_reply_stream_calibration.py)
holds each calibration answer's most extreme statistic over every prefix of its scorer tokens, so that any
checkpoint schedule is covered.  Its evaluation there reads prefixes of the scorer's own tokenization of each
finished answer.  Here the evaluation half of the same reference answers (apart from the calibration half and
from the baseline's fitting instructions) is streamed the way a remote OpenAI-compatible server streams it --
in GPT-4's cl100k_base pieces (tiktoken's file bundled with litellm; multi-byte characters held until whole, as
a server decodes) -- through ``Guard.stream`` with a scripted backend and the real embedded scorer judging
every ``embedded_every`` pieces (each checkpoint teacher-forces the answer so far through a reply session and
judges the scorer's settled tokens).  Each answer is streamed as far as its first ``calibrated_length`` (512)
scorer tokens (tokenized alone), the length the calibration covers and its own evaluation reads, so the rate is
comparable with eval/stream/reply_calibration.json; past it a checkpoint judges a window the calibration does not
cover (``beyond_calibrated``, recorded per cut all the same).  Counted: streams cut at a checkpoint (the
end-of-stream judgement, which is the whole-text decision, is not a cut).  The development set's degenerate
candidates (heuristic labels, unverified) are streamed the same way as positives: the first 100 non-empty in the
fit script's order, not the fit's 200, so not comparable with its figure.

Writes eval/stream/remote_replay.json (and prints a summary).  About 2 s a stream on 2 cores (~25 min).
"""

from __future__ import annotations

import argparse
import asyncio
import codecs
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network: litellm's bundled files only

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from fit_reply_stream_calibration import reply_halves, reply_order  # noqa: E402

from guardrail.backends.base import TokenEvent  # noqa: E402
from guardrail.backends.llamacpp import LlamaCppBackend  # noqa: E402
from guardrail.backends.scripted import ScriptedBackend  # noqa: E402
from guardrail.baselines.corpus import read_records  # noqa: E402
from guardrail.baselines.registry import resolve  # noqa: E402
from guardrail.baselines.splits import group_hash  # noqa: E402
from guardrail.evaluation.stream_eval import acceptance_99  # noqa: E402
from guardrail.guard import Guard  # noqa: E402
from guardrail.guard.policy import parse_policy  # noqa: E402


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def cl100k_pieces(text: str) -> list[str]:
    """The text as a server streams it in cl100k_base tokens: each token's bytes decoded incrementally (a
    character split across tokens arrives with the token that completes it; empty pieces are dropped)."""
    from litellm.litellm_core_utils.default_encoding import encoding

    dec = codecs.getincrementaldecoder("utf-8")("replace")
    pieces = [dec.decode(encoding.decode_single_token_bytes(t)) for t in encoding.encode(text, disallowed_special=())]
    tail = dec.decode(b"", final=True)
    if tail:
        pieces.append(tail)
    return [p for p in pieces if p]


def within(engine, text: str, n: int) -> str:
    """The text of its first ``n`` scorer tokens (tokenized alone; a character cut in two is dropped)."""
    ids = engine.tokenize(text.encode("utf-8")).tolist()
    if len(ids) <= n:
        return text
    return b"".join(engine.pieces[t] for t in ids[:n]).decode("utf-8", "ignore")


def events(pieces: list[str]) -> list[TokenEvent]:
    out = [TokenEvent(index=i, token=None, text=p) for i, p in enumerate(pieces)]
    out[-1].finish_reason, out[-1].prompt_tokens = "stop", 16
    return out


def policy(every: int, alpha: float):
    # the output side only (no prompt screen: the reference instructions are not what is measured); tiers that
    # never act on the end-of-stream judgement, so a stream ends either cut at a checkpoint or whole
    return parse_policy(f"name: replay\noutput:\n  baseline: general\n  tiers: [{{p: 1.0e-9, action: annotate, tail: true}}]\n"
                        f"stream: {{embedded_every: {every}, abort_p: {alpha}}}\n", "replay.yaml")


async def replay(scorer, answers: list, every: int, alpha: float, max_tokens: int) -> dict:
    pol = policy(every, alpha)
    cut, checkpoints, beyond, n = [], 0, 0, 0
    for r in answers:
        pieces = cl100k_pieces(r.text)
        if not pieces:
            continue
        guard = Guard(pol, ScriptedBackend([events(pieces)]), scorer=scorer, output_regimes=[])
        last = None
        async for e in guard.stream([{"role": "user", "content": r.group}], max_tokens=max_tokens):
            last = e
        st = last.result.report.stream
        assert st.method == "calibrated", st.method  # every-prefix calibration serves this abort_p
        n += 1
        checkpoints += len(st.checkpoints)
        beyond += bool(st.beyond_calibrated)
        if st.aborted_at is not None:
            cut.append({"at_piece": st.aborted_at, "pieces": len(pieces), "beyond_calibrated": st.beyond_calibrated,
                        "group": group_hash(r.group)[:12]})
    lo, hi = acceptance_99(n, alpha)
    return {"n": n, "cut": len(cut), "cut_rate": round(len(cut) / n, 4) if n else None,
            "binomial_99": [round(lo, 4), round(hi, 4)], "checkpoints_per_stream": round(checkpoints / max(n, 1), 1),
            "beyond_calibrated": beyond, "cuts": cut}


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--every", default="16", help="comma-separated embedded_every values (streamed pieces)")
    ap.add_argument("--alphas", default="0.01,0.05")
    ap.add_argument("--eval", type=int, default=300)
    ap.add_argument("--degenerate", type=int, default=100)
    ap.add_argument("--degenerate-alphas", default="0.05", help="the alphas the degenerate candidates are replayed at")
    ap.add_argument("--max-tokens", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "eval" / "stream" / "remote_replay.json")
    args = ap.parse_args()
    degen_alphas = set(map(float, args.degenerate_alphas.split(",")))
    b = resolve("general", "output")
    normal = reply_halves(args.data, b, 500, args.eval)["eval"]
    degen = read_records(args.data / "outputs" / "degenerate_candidates.jsonl", "output", "instruction")
    degen = [r for r in reply_order(degen) if r.text.strip()][: args.degenerate]
    scorer = LlamaCppBackend(None, n_threads=args.threads)
    b.check_scorer(scorer.scorer, "general.output")
    normal = [dataclasses.replace(r, text=within(scorer.engine, r.text, b.stream.calibrated_length)) for r in normal]
    degen = [dataclasses.replace(r, text=within(scorer.engine, r.text, b.stream.calibrated_length)) for r in degen]
    doc: dict = {"baseline": b.id, "tokenizer": "cl100k_base", "calibration": {
        "n": b.stream.n, "calibrated_length": b.stream.calibrated_length, "min_tokens": b.stream.min_tokens,
        "check_every": b.stream.check_every}, "runs": {}}
    try:
        for every in map(int, args.every.split(",")):
            for alpha in map(float, args.alphas.split(",")):
                key = f"every_{every}/alpha_{alpha:g}"
                t0 = time.time()
                row = {"normal": await replay(scorer, normal, every, alpha, args.max_tokens)}
                if alpha in degen_alphas:
                    row["degenerate_candidates"] = await replay(scorer, degen, every, alpha, args.max_tokens)
                row["seconds"] = round(time.time() - t0, 1)
                doc["runs"][key] = row
                log(f"{key}: normal cut {row['normal']['cut']}/{row['normal']['n']} = {row['normal']['cut_rate']} "
                    f"(99 % acceptance {row['normal']['binomial_99']}), degenerate cut "
                    f"{row.get('degenerate_candidates', {}).get('cut_rate')}, {row['seconds']} s")
    finally:
        await scorer.aclose()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    log(f"wrote {args.out}")


if __name__ == "__main__":
    asyncio.run(main())
