"""`make bench`: speed and memory figures, each with a reference measured in the same run.

Writes bench/results.json and bench/results.md.  Not a test: nothing here passes or fails.

* windows: the scoring core's max-window search over 32,768 tokens x 3 widths vs a naive Python loop.
* embedded: teacher-forced scoring throughput on 512-token texts with 2 threads -- guardrail's engine
  (compute f16, the default; and the GGUF's native Q4_1) vs a plain llama-cpp-python loop (``Llama(logits_all=True)``,
  ``eval``, numpy log-softmax over ``scores``).  Each configuration runs in its own process so that its peak
  RSS is its own.
* stream: normalization overhead per 1,000 streamed tokens (top 5 alternatives each) -- LiteLLMBackend.stream
  (litellm chunks -> normalized TokenEvents) vs iterating the raw litellm stream, both reading the same
  recorded vLLM SSE body (tokens cycled from tests/fixtures/vllm/c_chat_logprobs_stream.sse) from an httpx mock
  transport, so the difference is guardrail's own work.  Timed in process CPU time, interleaved, best of runs.
* assessor, generation, guard, teacher_stream, proxy: see each bench/*_bench.py.
* teacher_load: K remote streams at once judged by the one embedded scorer, at the end only or every 16 pieces
  (bench/teacher_bench.py ``bench_teacher_load``): why ``default`` keeps ``stream.embedded_every: 0``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from assessor_bench import bench_assessor  # noqa: E402
from generation_bench import bench_generation  # noqa: E402
from guard_bench import bench_guard  # noqa: E402
from teacher_bench import bench_teacher, bench_teacher_load  # noqa: E402

GFLOP_PER_TOKEN = 0.27  # ~2 x 135M parameters
N_TEXTS = 12
TEXT_TOKENS = 512
THREADS = 2


def _median_time(fn, repeat: int) -> float:
    fn()
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def bench_windows() -> dict:
    from guardrail.scoring import TokenArrays, _buffer, _cumsum, score_arrays

    n, widths = 32768, (8, 16, 32)
    rng = np.random.default_rng(0)
    nll = rng.gamma(2.0, 1.5, n)
    arrays = TokenArrays(nll=nll, start=np.arange(n), end=np.arange(n) + 1, nbytes=np.ones(n, np.int64),
                         entropy=np.full(n, np.nan))

    def core():  # exactly what score_arrays runs per text, without the report objects
        c = _cumsum(nll, _buffer("cumsum", n + 1))
        return [int(np.argmax(np.subtract(c[w:], c[:-w], out=_buffer("sums", n - w + 1)))) for w in widths]

    def naive():
        vals = nll.tolist()
        out = []
        for w in widths:
            best, arg = -1.0, 0
            for i in range(n - w + 1):
                m = sum(vals[i : i + w]) / w
                if m > best:
                    best, arg = m, i
            out.append(arg)
        return out

    assert core() == naive()
    t_core = _median_time(core, 300)
    t_full = _median_time(lambda: score_arrays(arrays, widths), 100)
    t_naive = _median_time(naive, 3)
    return {
        "tokens": n, "widths": list(widths),
        "core_ms": round(t_core * 1e3, 4), "score_arrays_ms": round(t_full * 1e3, 4),
        "naive_loop_ms": round(t_naive * 1e3, 2),
        "speedup_core_vs_naive": round(t_naive / t_core, 1),
        "goal_ms": 0.2,
        "what": "core = cumsum + per-width window sums + argmax; score_arrays adds whole-text stats and the report objects",
    }


def _texts() -> list[str]:
    """512-token texts: WikiText-2 from ../shared when present, else the repo's test paragraph repeated."""
    shared = ROOT.parent / "shared" / "data" / "domains" / "general_wiki.jsonl"
    if shared.exists():
        docs = [json.loads(line)["text"] for line in shared.open(encoding="utf-8")]
        return [" ".join(docs)]
    para = json.loads((ROOT / "tests" / "data" / "fluent_english.jsonl").read_text())["text"]
    return [" ".join([para] * 80)]


def _cut(engine_tokenize, pieces, source: str) -> list[str]:
    ids = engine_tokenize(source.encode())
    texts = []
    for a in range(0, len(ids) - TEXT_TOKENS, TEXT_TOKENS):
        texts.append(b"".join(pieces[i] for i in ids[a : a + TEXT_TOKENS]).decode("utf-8", "replace"))
        if len(texts) == N_TEXTS:
            break
    return texts


def child(kind: str) -> dict:
    """Runs in a subprocess: one configuration, returns its figures."""
    from guardrail.backends.llamacpp import LlamaCppBackend
    from guardrail.models import default_model_path

    source = _texts()[0]
    if kind == "vllm_cpu_prompt_logprobs":  # the same texts, cut by the embedded tokenizer; vLLM's own server
        from vllm_bench import bench_vllm

        backend = LlamaCppBackend(n_threads=THREADS)
        texts = _cut(backend.engine.tokenize, backend.engine.pieces, source)
        backend.close()  # nothing of llama.cpp left running beside vLLM
        return bench_vllm(texts)
    if kind == "llama_cpp_python_loop":
        import llama_cpp

        llm = llama_cpp.Llama(str(default_model_path()), n_ctx=2048, n_batch=512, logits_all=True,
                              n_threads=THREADS, n_threads_batch=THREADS, verbose=False)
        pieces = [llm.detokenize([i]) for i in range(llm.n_vocab())]
        texts = _cut(lambda b: llm.tokenize(b, add_bos=False, special=False), pieces, source)
        toks = [llm.tokenize(t.encode(), add_bos=False, special=False) for t in texts]

        def run():
            out = []
            for ids in toks:
                llm.reset()
                llm.eval(ids)
                z = llm.scores[: len(ids) - 1].astype(np.float64)
                lse = np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) + z.max(1)
                out.append(z[np.arange(len(ids) - 1), ids[1:]] - lse)
            return out
    else:
        compute = {"guardrail_f16": "f16", "guardrail_native_q4_1": "native"}[kind]
        backend = LlamaCppBackend(compute=compute, n_threads=THREADS)
        eng = backend.engine
        texts = _cut(eng.tokenize, eng.pieces, source)
        toks = [eng.tokenize(t.encode()) for t in texts]

        def run():
            return backend.score_blocking(texts)

    run()  # warm-up
    n_tokens = sum(len(t) for t in toks)
    best = min(_timed(run) for _ in range(2))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tps = n_tokens / best
    return {"tokens": n_tokens, "seconds": round(best, 3), "tokens_per_s": round(tps, 1),
            "gflop_per_s": round(tps * GFLOP_PER_TOKEN, 1), "peak_rss_mib": round(rss, 1)}


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def bench_embedded() -> dict:
    out = {}
    for kind in ("llama_cpp_python_loop", "guardrail_native_q4_1", "guardrail_f16", "vllm_cpu_prompt_logprobs"):
        p = subprocess.run([sys.executable, __file__, "--child", kind], capture_output=True, text=True, timeout=1800)
        if p.returncode != 0:
            out[kind] = {"error": p.stderr.strip().splitlines()[-1] if p.stderr.strip() else "failed"}
            continue
        out[kind] = json.loads(p.stdout.strip().splitlines()[-1])
    ref = out.get("llama_cpp_python_loop", {}).get("tokens_per_s")
    for v in out.values():
        if ref and "tokens_per_s" in v:
            v["ratio_to_llama_cpp_python_loop"] = round(v["tokens_per_s"] / ref, 2)
    out["setup"] = {"texts": N_TEXTS, "tokens_per_text": TEXT_TOKENS, "threads": THREADS, "goal_tokens_per_s": 500,
                    "gflop_per_token": GFLOP_PER_TOKEN}
    return out


STREAM_TOKENS = 2000


def _sse_body(n: int) -> bytes:
    src = (ROOT / "tests" / "fixtures" / "vllm" / "c_chat_logprobs_stream.sse").read_text(encoding="utf-8")
    chunks = [json.loads(b[6:]) for b in src.split("\n\n") if b.startswith("data: {")]
    tok = [c for c in chunks if c["choices"] and (c["choices"][0].get("logprobs") or {}).get("content")]
    tok = [c for c in tok if c["choices"][0]["logprobs"]["content"][0]["token"] != "<|im_end|>"]
    out = [chunks[0]]
    for i in range(n):
        c = json.loads(json.dumps(tok[i % len(tok)]))
        c["choices"][0]["finish_reason"] = "length" if i == n - 1 else None
        out.append(c)
    return "".join(f"data: {json.dumps(c)}\n\n" for c in out).encode() + b"data: [DONE]\n\n"


def bench_stream(repeat: int = 15) -> dict:
    import asyncio

    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import httpx
    import litellm
    import respx

    from guardrail.backends.base import GenerationRequest
    from guardrail.backends.litellm import LiteLLMBackend

    litellm.disable_aiohttp_transport = True  # so that the mock transport serves the body
    base = "http://127.0.0.1:9/v1"
    body = _sse_body(STREAM_TOKENS)
    backend = LiteLLMBackend("hosted_vllm/smollm2-135m", api_base=base)
    req = GenerationRequest(messages=[{"role": "user", "content": "x"}], max_tokens=STREAM_TOKENS, top_logprobs=5)
    kw = backend._request(req, stream=True)  # the very litellm call the backend makes

    async def raw() -> int:
        n = 0
        async for chunk in await litellm.acompletion(**kw):
            n += len(chunk.choices[0].logprobs.content) if chunk.choices and chunk.choices[0].logprobs else 0
        return n

    async def normalized() -> int:
        return len([ev async for ev in backend.stream(req) if ev.token is not None])

    import gc

    def timed(fn) -> tuple[float, int]:
        gc.collect()  # both paths start from the same collector state
        # CPU time of this process: both paths are CPU-bound here (the body comes from a mock transport), and
        # CPU time is not inflated by other processes competing for the cores, unlike wall time
        t = time.process_time()
        n = asyncio.run(fn())
        return time.process_time() - t, n

    with respx.mock() as router:
        router.post(f"{base}/chat/completions").mock(
            side_effect=lambda request: httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body))
        timed(raw), timed(normalized)  # warm-up (imports, pydantic schemas)
        t_raw, t_norm, n_raw, n_norm = [], [], 0, 0
        for _ in range(repeat):  # interleaved, so that load from other processes hits both alike
            dt, n_raw = timed(raw)
            t_raw.append(dt)
            dt, n_norm = timed(normalized)
            t_norm.append(dt)
        # guardrail's own work alone, without litellm's: StreamAssembler.feed over the very chunk objects the
        # raw stream yields (materialized once), best of many runs -- the figure the end-to-end pairs, whose run to
        # run noise on a shared VM exceeds the effect, bound from above
        from guardrail.backends.stream_assembler import StreamAssembler

        async def collect() -> list:
            return [c async for c in await litellm.acompletion(**kw)]

        chunks = asyncio.run(collect())
        t_feed = []
        for _ in range(30):
            asm = StreamAssembler(backend._origin, STREAM_TOKENS)
            gc.collect()
            t = time.process_time()
            for c in chunks:
                asm.feed(c)
            asm.finish()
            t_feed.append(time.process_time() - t)
    # best of the runs: on a shared machine the minimum is the least disturbed figure; medians kept too, and
    # the median of the per-pair ratios (each pair ran back to back, so a burst of load hits both alike)
    r, m = min(t_raw), min(t_norm)
    ratios = sorted(b / a for a, b in zip(t_raw, t_norm, strict=True))
    per_1000 = 1000 * 1000 / STREAM_TOKENS
    return {"tokens": STREAM_TOKENS, "tokens_seen_raw": n_raw, "tokens_seen_normalized": n_norm, "repeat": repeat,
            "raw_litellm_ms_per_1000": round(r * per_1000, 1), "normalized_ms_per_1000": round(m * per_1000, 1),
            "overhead_pct": round(100 * (m - r) / r, 1),
            "overhead_pct_median_pair": round(100 * (float(np.median(ratios)) - 1), 1),
            "normalize_only_ms_per_1000": round(min(t_feed) * per_1000, 1),
            "overhead_pct_normalize_only": round(100 * min(t_feed) / r, 1),
            "median_raw_ms_per_1000": round(float(np.median(t_raw)) * per_1000, 1),
            "median_normalized_ms_per_1000": round(float(np.median(t_norm)) * per_1000, 1),
            "goal_overhead_pct": 5}


def bench_proxy() -> dict:
    """The proxy against a fake OpenAI-compatible backend (bench/proxy_bench.py, its own processes)."""
    out = ROOT / "bench" / "proxy.json"
    r = subprocess.run([sys.executable, "-W", "ignore", str(ROOT / "bench" / "proxy_bench.py"), "--out", str(out)],
                       capture_output=True, text=True, cwd=ROOT)
    if r.returncode != 0:
        return {"error": r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit {r.returncode}"}
    return json.loads(out.read_text())


def markdown(res: dict) -> str:
    w = res["windows"]
    lines = [
        "# Benchmarks", "", f"Measured on {res['machine']} ({res['cpus']} CPUs) by `make bench`, "
        + (", ".join(f"{k} {d}" for k, d in res["measured"].items()) if res.get("measured") else res["date"]) + ".", "",
        "## Window scoring (32,768 tokens x 3 widths)", "",
        "| what | ms | vs naive loop |", "|---|---|---|",
        f"| core (cumsum, window sums, argmax) | {w['core_ms']} | {w['speedup_core_vs_naive']}x faster |",
        f"| score_arrays (with whole-text stats, report objects) | {w['score_arrays_ms']} | |",
        f"| naive Python loop | {w['naive_loop_ms']} | 1x |", "",
        "## Embedded scoring, 512-token texts, 2 threads", "",
        "| engine | tokens/s | GFLOP/s | peak RSS MiB | vs llama-cpp-python loop |", "|---|---|---|---|---|",
    ]
    for k, v in res["embedded"].items():
        if k == "setup":
            continue
        if "error" in v or "skipped" in v:
            lines.append(f"| {k} | {v.get('error') or v.get('skipped')} | | | |")
            continue
        name = f"{k} ({v['dtype']}, its own server)" if "dtype" in v else k
        lines.append(f"| {name} | {v['tokens_per_s']} | {v.get('gflop_per_s', '')} | {v.get('peak_rss_mib', '')} | "
                     f"{v.get('ratio_to_llama_cpp_python_loop', '')} |")
    st = res.get("stream")
    if st:
        lines += ["", "## Streamed logprobs: normalization overhead per 1,000 tokens (top 5 each)", "",
                  "| path | ms per 1,000 tokens (best of runs) | median |", "|---|---|---|",
                  f"| raw litellm stream (iterate chunks) | {st['raw_litellm_ms_per_1000']} | "
                  f"{st['median_raw_ms_per_1000']} |",
                  f"| LiteLLMBackend.stream (normalized TokenEvents) | {st['normalized_ms_per_1000']} | "
                  f"{st['median_normalized_ms_per_1000']} |",
                  f"| normalization alone (StreamAssembler.feed over the same chunks) | {st['normalize_only_ms_per_1000']} | |",
                  "", f"Overhead (goal < {st['goal_overhead_pct']} %): normalization alone {st['overhead_pct_normalize_only']} % of "
                  f"the raw stream; end to end {st['overhead_pct_median_pair']} % (median of {st['repeat']} back-to-back "
                  f"pairs of {st['tokens']} tokens) and {st['overhead_pct']} % (best of runs); process CPU time."]
    a = res.get("assessor")
    if a:
        lines += ["", f"## Streaming assessor ({a['tokens']} synthetic tokens, checkpoint every {a['check_every']}, "
                  f"baseline {a['baseline']})", "", "| what | cost | goal |", "|---|---|---|",
                  f"| incremental signals, per token | {a['us_per_token_update']} µs | <= {a['goal_us_per_token']} µs |",
                  f"| features snapshot per checkpoint ({a['checkpoint_source']}) | "
                  f"{a['us_per_checkpoint_snapshot']} µs | |",
                  f"| decision per checkpoint: precomputed signal thresholds, the full assessment where they do not "
                  f"clear ({round(100 * a['cleared_share'])} % cleared) | {a['us_per_checkpoint_decision']} µs | "
                  f"<= {a['goal_us_per_checkpoint']} µs |",
                  f"| the full conformal assessment alone (every checkpoint before) | "
                  f"{a['us_per_checkpoint_full_assessment']} µs | |",
                  f"| the stream end to end | {a['stream_ms']} ms | |",
                  f"| whole-text path re-run at every checkpoint | {a['whole_text_each_checkpoint_ms']} ms "
                  f"({a['whole_vs_stream']}x) | |"]
    gd = res.get("guard")
    if gd:
        lines += ["", f"## The Guard's own overhead per request ({gd['policy']} policy, both sides: a "
                  f"{gd['prompt_tokens']}-token prompt, a {gd['output_tokens']}-token answer; backend time excluded)", "",
                  "| p50 ms | p99 ms | CPU ms (mean) | screen p50 ms | output score p50 ms | goal p50 ms |",
                  "|---|---|---|---|---|---|",
                  f"| {gd['p50_ms']} | {gd['p99_ms']} | {gd['mean_cpu_ms']} | {gd['stage_p50_ms']['screen_ms']} | "
                  f"{gd['stage_p50_ms']['score_ms']} | {gd['goal_p50_ms']} |"]
    g = res.get("generation")
    if g:
        lines += ["", f"## Generation with the streaming assessor attached ({g['prompts']} prompts x {g['rounds']} "
                  f"rounds, greedy, {g['max_tokens']} tokens, runs alternating)", "",
                  "| without | with the assessor | slower by | goal |", "|---|---|---|---|",
                  f"| {g['tokens_per_s_without']} tokens/s | {g['tokens_per_s_with_assessor']} tokens/s | "
                  f"{g['slowdown_pct']} % | <= {g['goal_slowdown_pct']} % |"]
    tb = res.get("teacher_stream")
    if tb:
        sec = tb["seconds_per_stream"]
        lines += ["", f"## A remote stream judged by the embedded scorer at checkpoints ({tb['answer_tokens']}-token "
                  f"answer streamed at once, {tb['words_streamed']} pieces; seconds per stream, median of "
                  f"{tb['rounds']} alternating rounds)", "",
                  "| judged | with reply sessions | re-scored at each checkpoint |", "|---|---|---|",
                  f"| at the end only | {sec['end_only']} | |",
                  f"| every 32 pieces ({tb['checkpoints']['every_32_sessions']} checkpoints) | "
                  f"{sec['every_32_sessions']} | {sec['every_32_fresh']} |",
                  f"| every 16 pieces ({tb['checkpoints']['every_16_sessions']} checkpoints) | "
                  f"{sec['every_16_sessions']} | {sec['every_16_fresh']} |"]
    tl = res.get("teacher_load")
    if tl:
        lines += ["", f"## Concurrent remote streams judged by the embedded scorer ({tl['pieces']} pieces each at "
                  f"{tl['rate_pieces_per_s']:g} pieces/s from a scripted remote server; {tl.get('reply_sessions')} "
                  f"reply sessions; medians over streams and {tl['rounds']} rounds)", "",
                  "| streams at once | judged | first text s | end s | all done s | decoded per stream |",
                  "|---|---|---|---|---|---|"]
        for k in sorted((k for k in tl if k.endswith("_streams")), key=lambda k: int(k.split("_")[0])):
            for name, label in (("end_only", "at the end (default)"), ("every_16", "every 16 pieces")):
                r = tl[k][name]
                lines.append(f"| {k.split('_')[0]} | {label} | {r['first_s']} | {r['end_s']} | {r['wall_s']} | "
                             f"{r.get('decoded_per_stream', '')} |")
    px = res.get("proxy")
    if px and "targets" in px:
        lines += ["", f"## Proxy overhead ({px['backend']}; one uvicorn worker each, load generator on the same "
                  f"{px['cpus']} CPUs)", "",
                  "| target | p50 ms | p99 ms | requests/s (32 concurrent) | stream: first content p50 ms | "
                  "stream: end p50 ms | CPU ms per streamed token | 200 concurrent streams: errors |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, t in px["targets"].items():
            lines.append(f"| {name} | {t['p50_ms']} | {t['p99_ms']} | {t['requests_per_s']} | "
                         f"{t['stream_first_content_p50_ms']} | {t['stream_total_p50_ms']} | "
                         f"{t.get('cpu_ms_per_streamed_token', '')} | {t['concurrent_streams_200_errors']} |")
        sm = px["summary"]
        lines += ["", f"guardrail (output scoring on: the backend's own logprobs against a baseline fitted for it, "
                  f"streams assessed every 16 tokens) adds {sm['guardrail_added_p50_ms_beyond_floor']} ms p50 beyond "
                  f"the minimal pass-through proxy (which adds {sm['floor_added_p50_ms_over_direct']} ms over "
                  f"direct), serves {sm['guardrail_requests_per_s_vs_floor']}x its requests/s, and spends "
                  f"{sm['guardrail_cpu_ms_per_streamed_token_beyond_floor']} ms more CPU per streamed token."]
    elif px:
        lines += ["", f"## Proxy overhead: not measured ({px.get('error')})"]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "bench" / "results.json"))
    ap.add_argument("--child")
    ap.add_argument("--only", help="comma-separated sections to measure again (the others are kept from --out, "
                                   "each section with the date it was measured)")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child)))
        return
    sections = {"windows": bench_windows, "embedded": bench_embedded, "stream": bench_stream,
                "assessor": bench_assessor, "generation": bench_generation, "guard": bench_guard,
                "teacher_stream": bench_teacher, "teacher_load": bench_teacher_load,
                "proxy": bench_proxy}
    now = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    only = [s.strip() for s in args.only.split(",")] if args.only else list(sections)
    unknown = [s for s in only if s not in sections]
    if unknown:
        raise SystemExit(f"unknown sections {unknown}; known: {', '.join(sections)}")
    if args.only and not Path(args.out).exists():
        raise SystemExit(f"--only merges into {args.out}, which does not exist: run every section first")
    res = json.loads(Path(args.out).read_text()) if args.only else {}
    dates = res.setdefault("measured", {k: res.get("date", now) for k in sections if k in res})
    res.update({"date": now, "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count()})
    for name in only:
        res[name] = sections[name]()
        dates[name] = now
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    Path(args.out).with_suffix(".md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
