"""Calibrate the whole-stream abort rule of the teacher-forced output baseline (general.output) over every prefix.

When the embedded scorer judges another backend's stream (the policy's ``stream.embedded_every``), checkpoints
fall where that backend's tokens end: no fixed interval of the scorer's own tokens.  The calibration therefore
takes, for each calibration answer, the smallest tail statistic over *every* prefix of at least MIN_TOKENS
scorer tokens (``check_every = 1``): any schedule visits a subset of those prefixes, so the cut-off for a budget
alpha keeps P(a normal answer is cut anywhere within the calibrated length) <= alpha for every schedule
(guardrail.baselines.stream_calibration; the assessor leaves out the scorer's last token of a checkpoint, which
may be half a word, so the tokens it judges are a prefix as calibrated).

Answers: the reference answers of ../shared/data/outputs/reference_outputs.jsonl (AlpacaEval outputs of
GPT-4-1106, Llama-2-7B-chat, Qwen1.5-1.8B-chat) whose instruction the baseline was *not* fitted on, each
teacher-forced as the reply to its instruction, split by instruction into a calibration half and an evaluation
half.  The evaluation half measures the realised false-abort rate of the rule with checkpoints every 16 and
every 64 scorer tokens, and of the previous rule (Bonferroni over the planned checkpoints) as the ablation;
the positives are the embedded model's own word salad (temperature 1.8) and loops from the generation store
(scripts/stream_generations.py; a model teacher-forced on its own sample reads the logprobs it sampled with),
and the development set's degenerate candidates (heuristic labels, unverified).

Rewrites guardrail/data/baselines/general.output.json with its ``stream`` calibration and writes
eval/stream/reply_calibration.json.  Scores are cached (first run ~15 min on 2 cores; then ~3 min).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from guardrail.backends.llamacpp import LlamaCppBackend  # noqa: E402
from guardrail.baselines.corpus import read_records  # noqa: E402
from guardrail.baselines.model import load_baseline, save_baseline  # noqa: E402
from guardrail.baselines.registry import shipped  # noqa: E402
from guardrail.baselines.splits import group_hash  # noqa: E402
from guardrail.baselines.stream_calibration import CheckpointFeatures, calibrate_stream  # noqa: E402
from guardrail.batch import score_replies  # noqa: E402
from guardrail.cache import ScoreCache, default_cache_path  # noqa: E402
from guardrail.evaluation.generations import GenerationStore  # noqa: E402
from guardrail.evaluation.stream_eval import acceptance_99  # noqa: E402

LENGTH = 512  # scorer tokens calibrated (answers are cut there; a longer stream is judged on its last LENGTH)
MIN_TOKENS = 8  # the smallest window width: shorter prefixes are never cut
ALPHAS = (0.01, 0.05)
SCHEDULES = (16, 64)  # scorer tokens between checkpoints in the evaluation (any schedule is covered)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def checkpoint_stats(b, tokens, every: int) -> list[tuple[int, float]]:
    """(prefix length, tail statistic) at every ``every``-th scorer token of an answer, within LENGTH."""
    cf = CheckpointFeatures(b.widths, b.entropy_k, every, LENGTH)
    out = []
    for t in list(tokens)[:LENGTH]:
        f = cf.push(t)
        if f is not None and cf.n >= MIN_TOKENS:
            out.append((cf.n, b.assess(f, max(b.target_alphas)).tail_p))
    return out


def first_cut(stats: list[tuple[int, float]], threshold: float) -> int | None:
    return next((n for n, p in stats if p <= threshold), None)


def rule_rows(b, cal, answers: dict[str, list], onsets: dict[str, list[int]]) -> dict:
    """Abort rates per alpha and schedule: the calibrated rule and Bonferroni's over the planned checkpoints."""
    out: dict = {}
    for every in SCHEDULES:
        stats = {name: [checkpoint_stats(b, t, every) for t in toks] for name, toks in answers.items()}
        for a in ALPHAS:
            rules = {"calibrated": cal.threshold(a), "bonferroni": a / math.ceil(LENGTH / every)}
            for rule, thr in rules.items():
                for name, per in stats.items():
                    cuts = [first_cut(s, thr) for s in per]
                    n, k = len(cuts), sum(c is not None for c in cuts)
                    row = {"n": n, "aborted": k, "abort_rate": round(k / n, 4) if n else None, "threshold": thr}
                    if name == "normal":
                        lo, hi = acceptance_99(n, a)
                        row["binomial_99"] = [round(lo, 4), round(hi, 4)]
                        row["within_binomial_99"] = lo <= k / n <= hi
                    if name in onsets and k:
                        after = [c - o for c, o in zip(cuts, onsets[name], strict=True) if c is not None]
                        row["median_tokens_after_onset"] = statistics.median(after)
                    if k:
                        row["median_abort_token"] = statistics.median(c for c in cuts if c is not None)
                    out.setdefault(f"every_{every}", {}).setdefault(f"{a:g}", {}).setdefault(rule, {})[name] = row
    return out


def reply_order(records: list) -> list:
    """Answers in the fixed order every selection here takes them in (SHA-256 of instruction and answer)."""
    return sorted(records, key=lambda r: group_hash("reply-stream\x00" + r.group + "\x00" + r.text))


def reply_halves(data: Path, b, n_calib: int, n_eval: int) -> dict[str, list]:
    """The reference answers whose instruction ``b`` was not fitted on, split by instruction into a calibration
    and an evaluation half (at most ``n_calib`` / ``n_eval``, in a fixed hash order)."""
    trained = set(b.training_groups)
    recs = [r for r in read_records(data / "outputs" / "reference_outputs.jsonl", "output", "instruction")
            if group_hash(r.group) not in trained]
    order = reply_order(recs)
    halves: dict[str, list] = {"calib": [], "eval": []}
    for r in order:
        half = "calib" if int(group_hash("reply-stream-half\x00" + r.group), 16) % 2 == 0 else "eval"
        if len(halves[half]) < (n_calib if half == "calib" else n_eval):
            halves[half].append(r)
    log(f"{len(recs)} reference answers apart from the baseline's fitting instructions; "
        f"{len(halves['calib'])} calibration, {len(halves['eval'])} evaluation")
    return halves


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--calib", type=int, default=500)
    ap.add_argument("--eval", type=int, default=300)
    ap.add_argument("--degenerate", type=int, default=200)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "eval" / "stream" / "reply_calibration.json")
    args = ap.parse_args()
    path = shipped()[("general", "output")]
    b = load_baseline(path)
    halves = reply_halves(args.data, b, args.calib, args.eval)
    backend = LlamaCppBackend(None, n_threads=args.threads)
    b.check_scorer(backend.scorer, "general.output")
    cache = ScoreCache(default_cache_path())
    segs = {}
    for half, rs in halves.items():
        t0 = time.time()
        got = await score_replies(backend, [(r.group, r.text) for r in rs], cache=cache)
        segs[half] = [s for s in got if s is not None and s.tokens]
        log(f"{half}: scored {len(rs)} in {time.time() - t0:.0f} s ({len(rs) - len(segs[half])} unscorable)")
    degen = read_records(args.data / "outputs" / "degenerate_candidates.jsonl", "output", "instruction")
    degen = reply_order(degen)[: args.degenerate]
    got = await score_replies(backend, [(r.group, r.text) for r in degen], cache=cache)
    degen_tokens = [s.tokens for s in got if s is not None and s.tokens]
    backend.close()

    t0 = time.time()
    cal = calibrate_stream(b.model_copy(update={"stream": None}), [s.tokens for s in segs["calib"]], check_every=1,
                           source="teacher_forced",
                           length=LENGTH, min_tokens=MIN_TOKENS, notes=[
                               f"{len(segs['calib'])} reference answers (AlpacaEval: GPT-4-1106, Llama-2-7B-chat, "
                               f"Qwen1.5-1.8B-chat) to instructions the baseline was not fitted on, teacher-forced "
                               f"as replies; minimum over every prefix of {MIN_TOKENS} to {LENGTH} scorer tokens"])
    log(f"calibrated on {cal.n} answers in {time.time() - t0:.0f} s: thresholds "
        + ", ".join(f"{a:g}: {cal.threshold(a):.3g}" for a in ALPHAS))

    store = GenerationStore()
    own = store.of_scorer(b.scorer_id)
    salad = [g.tokens for g in own if g.temperature >= 1.8]
    loops = [g for g in own if g.loop and g.temperature < 1.8]
    answers = {"normal": [s.tokens for s in segs["eval"]], "salad_t1.8": salad,
               "loops": [g.tokens for g in loops], "degenerate_candidates": degen_tokens}
    onsets = {"salad_t1.8": [0] * len(salad), "loops": [g.loop_onset or 0 for g in loops]}
    rows = rule_rows(b, cal, answers, onsets)
    b.stream = cal
    save_baseline(b, path)
    results_path = path.parent / "results.json"  # names the shipped baselines by id: this one's content changed
    results = json.loads(results_path.read_text())
    if "general" in results.get("output", {}):
        results["output"]["general"]["baseline"] = b.id
        results_path.write_text(json.dumps(results, indent=1) + "\n")
    doc = {"baseline": b.id, "calibrated_length": LENGTH, "min_tokens": MIN_TOKENS, "calibration_n": cal.n,
           "thresholds": {f"{a:g}": cal.threshold(a) for a in ALPHAS}, "resolution": cal.resolution,
           "n": {k: len(v) for k, v in answers.items()}, "rules": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    for every, by_a in rows.items():
        for a, by_rule in by_a.items():
            log(f"{every} alpha={a}: " + "  ".join(f"{rule}: " + ", ".join(
                f"{name} {r['abort_rate']}" for name, r in per.items()) for rule, per in by_rule.items()))
    log(f"wrote {args.out} and {path}")


if __name__ == "__main__":
    asyncio.run(main())
