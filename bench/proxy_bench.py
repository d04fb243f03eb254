"""Proxy overhead, measured in one run against one fast fake OpenAI-compatible backend (bench/proxy_parts.py: 32
tokens with 5 alternatives each, no sleeps), one uvicorn worker each:

* direct: the client talks to the fake backend;
* floor: a minimal pass-through ASGI proxy (parse JSON, forward with one shared httpx client, re-serialise);
* guardrail: ``guardrail serve`` with output scoring on -- the serving model's own logprobs judged by a baseline
  fitted here for the fake backend's scorer (synthetic outputs; the numbers it decides on are not the point),
  streams assessed every 16 tokens.

Latency: sequential requests (p50, p99); throughput: 32 concurrent clients; streams: time to the first byte and
to the end; guardrail's and the floor's process CPU per streamed chunk (/proc); 200 concurrent streams held.  The
load generator runs on the same 2 cores, so absolute figures are pessimistic; compare the targets with each other.
This VM's speed swings up to 2x within minutes: the measurements run in ROUNDS rounds, each measuring every target
in turn, and each summary figure (a difference or a ratio between two targets) is the median over the rounds of
that comparison within a round (``summary_rounds`` lists them).

* litellm: LiteLLM's own proxy (``litellm --config``, one worker) in front of the same fake backend, from its own
  virtual environment (``make litellm-proxy-env``: ``litellm[proxy]`` pins clash with ours); skipped, and said
  so in the JSON, when that environment is absent.

    python bench/proxy_bench.py [--out bench/proxy.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

N_SEQ, N_THROUGHPUT, CONCURRENCY, N_STREAM, N_HELD = 300, 1200, 32, 100, 200
ROUNDS, WARMUP = 5, 10  # N_SEQ, N_THROUGHPUT and N_STREAM are split over the rounds


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


LITELLM_KEY = "sk-bench-" + os.urandom(16).hex()  # LiteLLM refuses to start without a master key
LITELLM = Path(os.environ.get("GUARDRAIL_LITELLM_PROXY", ROOT / ".venv-litellm-proxy" / "bin" / "litellm"))


def start(args: list[str], ready_url: str, timeout: float = 120, exe: str | None = None,
          env: dict | None = None) -> subprocess.Popen:
    proc = subprocess.Popen([exe or sys.executable, *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env={**os.environ, **(env or {})})
    deadline = time.monotonic() + timeout
    host, port = ready_url.split("//")[1].split("/")[0].split(":")
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            return proc
        except OSError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"{args} exited: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{args} not ready")


def fit_bench_baseline(fake_url: str, out_dir: Path) -> None:
    """A baseline for the fake backend's scorer from synthetic outputs (the same normalization path)."""
    from guardrail.backends.openai_http import OpenAIHTTPBackend
    from guardrail.backends.openai_logprobs import Origin, chat_output_segment
    from guardrail.baselines.features import features
    from guardrail.baselines.fit import DEFAULT_SIGNALS, DEFAULT_WIDTHS, fit_from_features
    from guardrail.baselines.model import save_baseline
    from guardrail.types import Side

    scorer = OpenAIHTTPBackend(fake_url, "fake").scorer
    origin = Origin.of(scorer)
    rng = np.random.default_rng(0)
    feats: dict = {"train": [], "calib": [], "test": []}
    groups: dict = {"train": [], "calib": [], "test": []}
    for i in range(600):
        n = int(rng.integers(20, 40))
        entries = []
        for _j in range(n):
            w = f" w{int(rng.integers(0, 400))}"
            lp = -float(rng.gamma(1.2, 0.9))
            tops = [{"token": w, "logprob": lp}] + [{"token": f" a{k}", "logprob": lp - 0.5 - k} for k in range(4)]
            entries.append({"token": w, "logprob": lp, "bytes": list(w.encode()), "top_logprobs": tops})
        seg = chat_output_segment({"logprobs": {"content": entries}, "message": {"content": None}}, origin)
        split = ("train", "calib", "test")[i % 3]
        feats[split].append(features(seg, DEFAULT_WIDTHS))
        groups[split].append(f"g{i}")
    b = fit_from_features(scorer, feats, groups, domain="bench", side=Side.OUTPUT, alphas=[0.01, 0.05],
                          widths=DEFAULT_WIDTHS, signals=DEFAULT_SIGNALS,
                          unit={"kind": "generation", "temperature": 0.0, "max_tokens": 40},
                          corpus={"synthetic": 600}, max_buckets=1)
    save_baseline(b, out_dir / "bench.output.json")


def _wait_ok(url: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} not ready: {proc.stderr.read().decode()[-2000:] if proc.poll() is not None else ''}")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


BODY = {"model": "fake", "max_tokens": 40, "messages": [{"role": "user", "content": "Tell me about rivers."}]}


async def measure_round(url: str, pid: int | None, headers: dict | None, n_seq: int, n_tp: int,
                        n_stream: int) -> dict:
    """One round against one target: sequential latencies, throughput at CONCURRENCY, streams (first content, end,
    the target's CPU per streamed token)."""
    out: dict = {}
    limits = httpx.Limits(max_connections=512, max_keepalive_connections=256)
    async with httpx.AsyncClient(timeout=120, limits=limits, headers=headers) as c:
        for _ in range(WARMUP):
            (await c.post(url, json=BODY)).raise_for_status()
        lat = []
        for _ in range(n_seq):
            t = time.perf_counter()
            r = await c.post(url, json=BODY)
            lat.append((time.perf_counter() - t) * 1e3)
            r.raise_for_status()
        out["lat_ms"] = lat
        sem = asyncio.Semaphore(CONCURRENCY)

        async def one() -> None:
            async with sem:
                (await c.post(url, json=BODY)).raise_for_status()
        t = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(n_tp)))
        out["requests_per_s"] = n_tp / (time.perf_counter() - t)
        ttfb, total = [], []
        cpu0 = cpu_s(pid) if pid else None
        for _ in range(n_stream):
            t = time.perf_counter()
            first = None
            async with c.stream("POST", url, json={**BODY, "stream": True}) as r:
                async for line in r.aiter_lines():
                    if line.startswith("data: {") and '"content":"' in line and '"content":""' not in line and first is None:
                        first = time.perf_counter()
            ttfb.append(((first or time.perf_counter()) - t) * 1e3)
            total.append((time.perf_counter() - t) * 1e3)
        if pid:
            out["cpu_ms_per_streamed_token"] = (cpu_s(pid) - cpu0) * 1e3 / (n_stream * 32)
        out["ttfb_ms"], out["stream_ms"] = ttfb, total
    return out


async def held_streams(url: str, headers: dict | None) -> int:
    """N_HELD streams at once: how many did not end with a 200 and ``[DONE]``."""
    limits = httpx.Limits(max_connections=512, max_keepalive_connections=256)
    async with httpx.AsyncClient(timeout=120, limits=limits, headers=headers) as c:
        async def held() -> bool:
            async with c.stream("POST", url, json={**BODY, "stream": True}) as r:
                text = "".join([line async for line in r.aiter_lines()])
            return r.status_code == 200 and "[DONE]" in text
        oks = await asyncio.gather(*(held() for _ in range(N_HELD)), return_exceptions=True)
    return sum(1 for o in oks if o is not True)


def _pct(xs: list[float], q: float) -> float:
    return round(float(np.percentile(xs, q)), 2)


def measure_all(targets: list[tuple[str, str, int | None, dict | None]]) -> tuple[dict, list[dict]]:
    """ROUNDS rounds, each measuring every target in turn (the order rotated from round to round): this VM's speed
    swings within minutes, so a comparison is made within a round and its median over the rounds reported.  Per
    target: p50 / p99 over all its rounds' requests, requests/s and CPU per streamed token as the median round."""
    rounds: list[dict] = []
    for k in range(ROUNDS):
        order = targets[k % len(targets):] + targets[:k % len(targets)]
        rounds.append({name: asyncio.run(measure_round(url + "/chat/completions", pid, auth, N_SEQ // ROUNDS,
                                                       N_THROUGHPUT // ROUNDS, N_STREAM // ROUNDS))
                       for name, url, pid, auth in order})
    res = {}
    for name, url, pid, auth in targets:
        rs = [r[name] for r in rounds]
        t = {"p50_ms": _pct([x for r in rs for x in r["lat_ms"]], 50),
             "p99_ms": _pct([x for r in rs for x in r["lat_ms"]], 99),
             "requests_per_s": round(float(np.median([r["requests_per_s"] for r in rs])), 1),
             "stream_first_content_p50_ms": _pct([x for r in rs for x in r["ttfb_ms"]], 50),
             "stream_total_p50_ms": _pct([x for r in rs for x in r["stream_ms"]], 50)}
        if pid:
            t["cpu_ms_per_streamed_token"] = round(float(np.median([r["cpu_ms_per_streamed_token"] for r in rs])), 4)
        t[f"concurrent_streams_{N_HELD}_errors"] = asyncio.run(held_streams(url + "/chat/completions", auth))
        res[name] = t
        print(name, t, flush=True)
    return res, rounds


def _per_round(rounds: list[dict], f) -> dict:
    """f(round) for every round, and its median: the comparison within each round."""
    vals = [f(r) for r in rounds]
    return {"median": round(float(np.median(vals)), 4), "rounds": [round(v, 4) for v in vals]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "proxy.json")
    args = ap.parse_args()
    procs = []
    try:
        fp, lp, gp = free_port(), free_port(), free_port()
        fake = f"http://127.0.0.1:{fp}/v1"
        procs.append(start(["bench/proxy_parts.py", "fake", "--port", str(fp)], f"http://127.0.0.1:{fp}/"))
        floor = start(["bench/proxy_parts.py", "floor", "--port", str(lp), "--backend", fake],
                      f"http://127.0.0.1:{lp}/x")
        procs.append(floor)
        tmp = Path(tempfile.mkdtemp(prefix="guardrail-bench-"))
        fit_bench_baseline(fake, tmp)
        (tmp / "bench-policy.yaml").write_text(
            "name: bench\noutput:\n  baseline: bench\n  tiers: [{p: 0.01, action: annotate}]\n"
            "regenerate: {max_attempts: 0}\nstream: {check_every: 16, abort_p: 0.01}\n")
        (tmp / "proxy.yaml").write_text(json.dumps({
            "models": {"fake": {"backend": "openai/fake", "api_base": fake, "policy": str(tmp / "bench-policy.yaml")}},
            "baselines_dir": str(tmp), "log_level": "warning",
            "limits": {"max_in_flight": 512, "max_waiting": 1024}}))
        guard = start(["-m", "guardrail.cli", "serve", "--config", str(tmp / "proxy.yaml"), "--port", str(gp)],
                      f"http://127.0.0.1:{gp}/readyz")
        procs.append(guard)
        while guard.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{gp}/readyz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        if guard.poll() is not None:
            raise RuntimeError(f"guardrail serve exited: {guard.stderr.read().decode()[-3000:]}")
        res = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpus": os.cpu_count(),
               "backend": "fake OpenAI-compatible server, 32 tokens x 5 alternatives, no sleeps",
               "targets": {}}
        targets = [("direct", fake, None), ("floor", f"http://127.0.0.1:{lp}/v1", floor.pid),
                   ("guardrail", f"http://127.0.0.1:{gp}/v1", guard.pid)]
        if LITELLM.exists():
            mp = free_port()
            (tmp / "litellm.yaml").write_text(json.dumps({"model_list": [{"model_name": "fake", "litellm_params": {
                "model": "openai/fake", "api_base": fake, "api_key": "sk-none"}}]}))
            lite = start(["--config", str(tmp / "litellm.yaml"), "--host", "127.0.0.1", "--port", str(mp),
                          "--num_workers", "1"], f"http://127.0.0.1:{mp}/", timeout=300, exe=str(LITELLM),
                         env={"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR",
                              "LITELLM_MASTER_KEY": LITELLM_KEY})
            procs.append(lite)
            _wait_ok(f"http://127.0.0.1:{mp}/health/liveliness", lite)
            targets.append(("litellm", f"http://127.0.0.1:{mp}/v1", lite.pid))
            res["litellm_version"] = subprocess.run([str(LITELLM.parent / "python"), "-c",
                                                     "import importlib.metadata as m; print(m.version('litellm'))"],
                                                    capture_output=True, text=True).stdout.strip()
        else:
            res["litellm_skipped"] = f"{LITELLM} not found (make litellm-proxy-env)"
        key = {"authorization": f"Bearer {LITELLM_KEY}"}
        res["rounds"] = ROUNDS
        res["targets"], rounds = measure_all([(name, url, pid, key if name == "litellm" else None)
                                              for name, url, pid in targets])
        r = httpx.post(f"http://127.0.0.1:{gp}/v1/chat/completions", json=BODY).json()["guardrail"]
        res["guardrail_report_check"] = {"action": r["action"], "output_p": r["attempts"][0]["output"]["p_value"],
                                         "scorer": r["scorers"]}
        p50 = lambda x: float(np.percentile(x, 50))  # noqa: E731
        per = {  # each a comparison within a round, its median over the rounds the summary's figure
            "guardrail_added_p50_ms_beyond_floor": _per_round(
                rounds, lambda r: p50(r["guardrail"]["lat_ms"]) - p50(r["floor"]["lat_ms"])),
            "floor_added_p50_ms_over_direct": _per_round(
                rounds, lambda r: p50(r["floor"]["lat_ms"]) - p50(r["direct"]["lat_ms"])),
            "guardrail_requests_per_s_vs_floor": _per_round(
                rounds, lambda r: r["guardrail"]["requests_per_s"] / r["floor"]["requests_per_s"]),
            "guardrail_cpu_ms_per_streamed_token_beyond_floor": _per_round(
                rounds, lambda r: r["guardrail"]["cpu_ms_per_streamed_token"] - r["floor"]["cpu_ms_per_streamed_token"]),
        }
        if "litellm" in res["targets"]:
            per.update({
                "litellm_added_p50_ms_over_direct": _per_round(
                    rounds, lambda r: p50(r["litellm"]["lat_ms"]) - p50(r["direct"]["lat_ms"])),
                "guardrail_requests_per_s_vs_litellm": _per_round(
                    rounds, lambda r: r["guardrail"]["requests_per_s"] / r["litellm"]["requests_per_s"]),
                "litellm_cpu_ms_per_streamed_token": _per_round(
                    rounds, lambda r: r["litellm"]["cpu_ms_per_streamed_token"]),
            })
        res["summary"] = {k: round(v["median"], 4 if "cpu" in k else 2) for k, v in per.items()}
        res["summary_rounds"] = {k: v["rounds"] for k, v in per.items()}
        args.out.write_text(json.dumps(res, indent=2) + "\n")
        print(json.dumps(res["summary"], indent=1))
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    main()
