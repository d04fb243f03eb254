"""``guardrail baseline fit | show | check``."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer

from .errors import ConfigError, GuardrailError

app = typer.Typer(no_args_is_help=True, help="Fit, inspect and check calibrated per-domain baselines.")

DataOpt = Annotated[list[Path], typer.Option("--data", help="JSONL file(s) (or text files, one document each)")]
FieldOpt = Annotated[str, typer.Option("--text-field", help="field holding the text")]
GroupOpt = Annotated[str | None, typer.Option("--group-field", help="field grouping records for splits (default: the text)")]
ChunkOpt = Annotated[str, typer.Option("--chunk-chars", help="cut documents into chunks of these character lengths, cycling (e.g. 256,512,1024); 'none' = whole records")]
CheckChunkOpt = Annotated[str, typer.Option("--chunk-chars", help="'fitted' (default): cut texts as the baseline's units were cut (its chunk lengths and chunks per document; whole records for prompt/output baselines) -- what its thresholds are calibrated for; or lengths as for fit; 'none' = whole records")]
CacheOpt = Annotated[Path | None, typer.Option("--cache-dir", help="score cache directory (default ~/.cache/guardrail)")]
ModelOpt = Annotated[Path | None, typer.Option("--model", help="GGUF file (default: the embedded SmolLM2)")]


def _fail(e: GuardrailError) -> None:
    typer.echo(f"error: {e}", err=True)
    raise typer.Exit(e.exit_code)


def _chunks(spec: str) -> list[int] | None:
    if spec.strip().lower() == "none":
        return None
    try:
        out = [int(x) for x in spec.split(",")]
    except ValueError:
        raise ConfigError(f"--chunk-chars takes integers separated by commas or 'none', got {spec!r}") from None
    if any(x < 16 for x in out):
        raise ConfigError("--chunk-chars lengths must be >= 16")
    return out


def _alpha(a: float) -> float:
    if not 0 < a < 1:
        raise ConfigError(f"alpha must be in (0, 1), got {a}")
    return a


def _cache(cache_dir: Path | None):
    from .cache import ScoreCache, default_cache_path

    return ScoreCache(cache_dir / "scores.sqlite" if cache_dir else default_cache_path())


def _progress():
    from rich.console import Console
    from rich.progress import Progress

    console = Console(stderr=True)
    # no bar when stderr is not a terminal (pipes, CI logs): it would only leave blank lines there
    return Progress(transient=True, console=console, disable=not console.is_terminal)


def _serving(spec: str, api_base: str | None, api_key_env: str | None):
    """The served model a baseline is fitted for, reached as the proxy reaches it (one httpx client)."""
    import os

    from .backends.openai_http import OpenAIHTTPBackend

    provider, _, name = spec.partition("/")
    if not name or provider not in ("openai", "hosted_vllm") or not api_base:
        raise ConfigError("--backend takes openai/NAME or hosted_vllm/NAME, with --api-base URL (…/v1)")
    key = os.environ.get(api_key_env) if api_key_env else None
    if api_key_env and key is None:
        raise ConfigError(f"--api-key-env: the environment variable {api_key_env} is not set")
    # a vLLM server echoes prompt logprobs: its prompts (and texts) can be scored, so fitted for, too
    return OpenAIHTTPBackend(api_base, name, api_key=key, echo_scoring=provider == "hosted_vllm")


def _run_closing(backend, coro):
    """Run ``coro`` in one event loop (the backend's client belongs to it), then close the backend."""
    async def go():
        try:
            return await coro
        finally:
            await backend.aclose()
    return asyncio.run(go())


@app.command()
def fit(
    domain: Annotated[str, typer.Option("--domain", help="domain id (corpus file stem, e.g. code_python)")],
    out: Annotated[Path, typer.Option("--out", help="where to write the baseline JSON")],
    data: Annotated[list[Path] | None, typer.Option("--data", help="JSONL file(s) (or text files, one document each); default: the benign prompts shipped with guardrail (600, eight sources; field prompt)")] = None,
    text_field: FieldOpt = "text",
    group_field: GroupOpt = None,
    side: Annotated[str, typer.Option("--side", help="prompt | output | text")] = "text",
    alpha: Annotated[list[float], typer.Option("--alpha", help="target false-alarm rate(s)")] = [0.01, 0.05],  # noqa: B006
    chunk_chars: ChunkOpt = "none",
    max_per_doc: Annotated[int, typer.Option("--max-per-doc", help="chunks per document at most")] = 1000,
    max_units: Annotated[int | None, typer.Option("--max-units", help="units per domain at most (with --generate: prompts)")] = None,
    cache_dir: CacheOpt = None,
    model: ModelOpt = None,
    generate: Annotated[bool, typer.Option("--generate", help="records are prompts: generate answers and fit an output-side baseline on their logprobs")] = False,
    max_tokens: Annotated[int, typer.Option("--max-tokens", help="with --generate: tokens per answer")] = 128,
    temperature: Annotated[float, typer.Option("--temperature", help="with --generate: sampling temperature")] = 0.7,
    seed: Annotated[int, typer.Option("--seed", help="with --generate: base seed (one per prompt)")] = 0,
    calibration: Annotated[str, typer.Option("--calibration", help="cross (default): cross-conformal over group folds of train+calib; split: reference from train, thresholds from calib")] = "cross",
    serving: Annotated[str | None, typer.Option("--backend", help="the serving model, as the proxy names it (openai/NAME or hosted_vllm/NAME, with --api-base): with --generate its own answers and logprobs; without, a vLLM server's prompt logprobs of the corpus (hosted_vllm/NAME)")] = None,
    api_base: Annotated[str | None, typer.Option("--api-base", help="with --backend: the server's OpenAI-compatible …/v1 URL")] = None,
    api_key_env: Annotated[str | None, typer.Option("--api-key-env", help="with --backend: environment variable holding the server's key")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Fit a baseline: score the corpus, split by group hash, calibrate on the fitting splits, report test rates.
    With --generate --backend: an output baseline of a served model's own answers; with --backend
    hosted_vllm/NAME alone: a prompt (or text) baseline of the vLLM server's own prompt logprobs.  Either lets the
    proxy judge that model by its own logprobs (put the file in the proxy's baselines_dir, name it in a policy)."""
    from .backends.llamacpp import LlamaCppBackend
    from .baselines.corpus import UnitRecipe, read_records
    from .baselines.fit import files_sha256, fit_baseline, fit_output_baseline
    from .baselines.model import save_baseline
    from .baselines.registry import shipped_prompts
    from .types import Side

    try:
        if calibration not in ("cross", "split"):
            raise ConfigError(f"--calibration must be cross or split, got {calibration!r}")
        if not data:  # the shipped benign prompts (see guardrail/data/prompts/README.md)
            data, text_field, group_field = [shipped_prompts()], "prompt", "group"
        if generate:
            alphas = [_alpha(a) for a in alpha]
            records = [r for p in data for r in read_records(p, text_field, group_field)][:max_units]
            backend = _serving(serving, api_base, api_key_env) if serving else LlamaCppBackend(model)
            with _progress() as bar:
                task = bar.add_task(f"generating {domain}", total=len(records))

                b = _run_closing(backend, fit_output_baseline(
                    backend, [r.text for r in records], domain=domain, alphas=alphas, max_tokens=max_tokens,
                    temperature=temperature, seed=seed, progress=lambda n: bar.advance(task, n),
                    calibration=calibration, corpus={"files": [p.name for p in data],
                                                     "sha256": files_sha256(data), "n_records": len(records)}))
            save_baseline(b, out)
            summary = {"baseline": b.id, "path": str(out), "corpus": b.corpus,
                       "test_rates": [r.model_dump() for r in b.test_rates]}
            typer.echo(json.dumps(summary) if as_json else f"wrote {out} ({b.id})")
            return
        if serving and not serving.startswith("hosted_vllm/"):
            raise ConfigError("--backend without --generate scores the corpus through the served model's prompt "
                              "logprobs, which only a vLLM server returns (hosted_vllm/NAME); for openai/NAME add "
                              "--generate (an output baseline of its own answers)")
        alphas = [_alpha(a) for a in alpha]
        try:
            side_v = Side(side)
        except ValueError:
            raise ConfigError(f"--side must be prompt, output or text, got {side!r}") from None
        if serving and side_v is Side.OUTPUT:
            raise ConfigError("--backend with --side output: an output baseline of a served model is fitted on its "
                              "own answers (add --generate); echo logprobs of given texts have no conversation")
        lengths = _chunks(chunk_chars)
        records = [r for p in data for r in read_records(p, text_field, group_field)]
        recipe = UnitRecipe(kind="chunk" if lengths else "record", chunk_chars=lengths, per_doc=max_per_doc)
        units = recipe.cut(records, max_units)
        # the embedded scorer, or a vLLM server's own prompt logprobs (echo): then the proxy judges that side of
        # the served model by its own logprobs with this baseline
        backend = _serving(serving, api_base, api_key_env) if serving else LlamaCppBackend(model)
        cache = _cache(cache_dir)
        with _progress() as bar:
            task = bar.add_task(f"scoring {domain}", total=len(units))

            b, _ = _run_closing(backend, fit_baseline(
                backend, units, domain=domain, side=side_v, alphas=alphas,
                unit={**recipe.model_dump(), "max_per_doc": max_per_doc, "max_units": max_units},
                corpus={"files": [p.name for p in data], "sha256": files_sha256(data), "n_records": len(records)},
                cache=cache, progress=lambda n: bar.advance(task, n), calibration=calibration))
        save_baseline(b, out)
        summary = {"baseline": b.id, "path": str(out), "corpus": b.corpus,
                   "test_rates": [r.model_dump() for r in b.test_rates]}
        typer.echo(json.dumps(summary) if as_json else f"wrote {out} ({b.id}); test flag rates: "
                   + ", ".join(f"alpha={r.alpha:g}: {r.flag_rate:.4f} (n={r.n})" for r in b.test_rates))
    except GuardrailError as e:
        _fail(e)


@app.command("list")
def list_(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The registered (shipped) baselines by name and side: what a policy's ``baseline:`` may name."""
    from .baselines.model import load_baseline
    from .baselines.registry import shipped

    try:
        rows = []
        for (name, side), path in shipped().items():
            b = load_baseline(path)
            rows.append({"name": name, "side": side, "id": b.id, "resolution": b.resolution, "unit": b.unit.get("kind"),
                         **({"temperature": b.unit["temperature"]} if "temperature" in b.unit else {})})
        if as_json:
            typer.echo(json.dumps(rows))
        else:
            for r in rows:
                extra = f" T={r['temperature']:g}" if "temperature" in r else ""
                typer.echo(f"{r['name']:<22} {r['side']:<7} {r['id']}  resolution {r['resolution']:.2g}  "
                           f"{r['unit']}{extra}")
    except GuardrailError as e:
        _fail(e)


@app.command()
def show(
    baseline: Annotated[str, typer.Argument(help="baseline file, or a shipped domain id (e.g. code_python)")],
    side: Annotated[str, typer.Option("--side")] = "text",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Show what a baseline was fitted on and its realised flag rates."""
    from .baselines.registry import resolve

    try:
        b = resolve(baseline, side)
        doc = {"baseline": b.id, "domain": b.domain, "side": b.side, "scorer_id": b.scorer_id,
               "widths": b.widths, "unit": b.unit, "corpus": b.corpus, "signals": b.calibrator.signals,
               "calibration": {"method": b.calibrator.method, "parts": len(b.calibrator.parts)},
               "length_buckets": [{"lo": x.lo, "hi": x.hi, "n_calib": b.calibrator.n_calib(i)}
                                  for i, x in enumerate(b.calibrator.buckets)],
               "target_alphas": b.target_alphas, "fit_date": b.fit_date,
               "test_rates": [r.model_dump() for r in b.test_rates]}
        typer.echo(json.dumps(doc) if as_json else json.dumps(doc, indent=2))
    except GuardrailError as e:
        _fail(e)


@app.command()
def check(
    data: DataOpt,
    domain: Annotated[str | None, typer.Option("--domain", help="shipped domain id or a baseline file")] = None,
    text_field: FieldOpt = "text",
    group_field: GroupOpt = None,
    side: Annotated[str, typer.Option("--side")] = "text",
    alpha: Annotated[float, typer.Option("--alpha")] = 0.01,
    chunk_chars: CheckChunkOpt = "fitted",
    max_per_doc: Annotated[int | None, typer.Option("--max-per-doc", help="chunks per document at most (default: as fitted)")] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="check at most N units")] = None,
    cache_dir: CacheOpt = None,
    model: ModelOpt = None,
    record_signals: Annotated[Path | None, typer.Option("--record-signals", help="append each unit's signal vector (no text) to this JSONL file, for baseline recalibrate (needs --domain)")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Realised flag rate of a baseline on texts not used to fit it (records of its training groups are dropped).

    Texts are cut into units as the baseline's were (see --chunk-chars): a corpus baseline's thresholds hold
    for chunks of the lengths it was fitted on, not for whole documents of any length."""
    from .backends.llamacpp import LlamaCppBackend
    from .baselines.corpus import UnitRecipe, read_records
    from .baselines.fit import DEFAULT_WIDTHS, binomial_interval, featurize
    from .baselines.model import Baseline, load_baseline
    from .baselines.registry import resolve, shipped, shipped_dir
    from .baselines.router import Router
    from .baselines.splits import group_hash
    from .types import Side

    try:
        a = _alpha(alpha)
        if record_signals is not None and domain is None:
            raise ConfigError("--record-signals needs --domain: a signal vector means something only against "
                              "the baseline it was computed for")
        backend = LlamaCppBackend(model)
        if domain is not None:
            fixed = resolve(domain, side)
            fixed.check_scorer(backend.scorer, domain)
            trained = set(fixed.training_groups)
            recipe = UnitRecipe.of(fixed.unit)
        else:  # the router picks per text; drop anything any shipped baseline was fitted on
            router = Router.load(shipped_dir() / "router.json")
            trained = {g for path in shipped().values() for g in load_baseline(path).training_groups}
            recipe = UnitRecipe.of(resolve("global", "text").unit if side == "text" else None)
        if chunk_chars.strip().lower() != "fitted":
            lengths = _chunks(chunk_chars)
            recipe = UnitRecipe(kind="chunk" if lengths else "record", chunk_chars=lengths, per_doc=recipe.per_doc)
        if max_per_doc is not None:
            recipe.per_doc = max_per_doc
        records = [r for p in data for r in read_records(p, text_field, group_field)]
        kept = [r for r in records if group_hash(r.group) not in trained]
        units = recipe.held_out(records, trained)[:limit]
        cache = _cache(cache_dir)
        with _progress() as bar:
            task = bar.add_task("scoring", total=len(units))
            widths = fixed.widths if domain is not None else list(DEFAULT_WIDTHS)
            feats = asyncio.run(featurize(backend, [u.text for u in units], Side(side), widths, cache,
                                          lambda n: bar.advance(task, n)))
        if record_signals is not None:
            from .baselines.recalibrate import SignalLog

            with SignalLog(record_signals) as sig:
                for f in feats:
                    if f is not None:
                        sig.record(fixed, f)
        loaded: dict[str, Baseline] = {domain: fixed} if domain is not None else {}
        per: dict[str, dict[str, object]] = {}
        routed_by: dict[str, int] = {}
        flags = n = beyond = 0
        for u, f in zip(units, feats, strict=True):
            if f is None:
                continue
            key = domain
            if key is None:
                route = router.route(u.text)
                routed_by[route.routed_by] = routed_by.get(route.routed_by, 0) + 1
                key = route.domain
            if key not in loaded:
                loaded[key] = resolve(key, side)
                loaded[key].check_scorer(backend.scorer, key)
            verdict = loaded[key].assess(f, a)
            hit = verdict.flag
            beyond += verdict.beyond_fitted_length
            entry = per.setdefault(key, {"baseline": loaded[key].id, "n": 0, "flags": 0})
            entry["n"] += 1
            entry["flags"] += hit
            flags += hit
            n += 1
        lo, hi = binomial_interval(flags, n) if n else (0.0, 1.0)
        doc = {"n": n, "flag_rate": flags / n if n else None, "alpha": a,
               "baseline": fixed.id if domain is not None else "router", "flags": flags,
               "n_unscorable": len(feats) - n, "n_dropped_training": len(records) - len(kept),
               "binomial_99": [lo, hi], "units": recipe.model_dump(), "n_beyond_fitted_length": beyond,
               "baselines": per, **({"routed_by": routed_by} if domain is None else {})}
        rate = f"{doc['flag_rate']:.4f}" if n else "n/a"
        warn = (f"; {beyond} units longer than any the baseline was fitted on (outside its calibration)"
                if beyond else "")
        typer.echo(json.dumps(doc) if as_json else
                   f"{doc['baseline']}: {flags}/{n} flagged = {rate} at alpha={a:g} (99% CI {lo:.4f}-{hi:.4f}){warn}")
    except GuardrailError as e:
        _fail(e)


@app.command()
def recalibrate(
    baseline: Annotated[str, typer.Argument(help="baseline file, or a shipped domain id, the signals were recorded with")],
    from_signals: Annotated[list[Path], typer.Option("--from-signals", help="JSONL signal log(s) (check --record-signals, or the guard's shadow mode)")],
    out: Annotated[Path, typer.Option("--out", help="where to write the recalibrated baseline JSON")],
    side: Annotated[str, typer.Option("--side")] = "text",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Refit a baseline's calibration on signal vectors recorded from a deployment's traffic (no text): the
    references and detector stay, the thresholds follow the traffic."""
    from .baselines.model import save_baseline
    from .baselines.recalibrate import read_signals
    from .baselines.recalibrate import recalibrate as refit
    from .baselines.registry import resolve

    try:
        b = resolve(baseline, side)
        feats = [f for p in from_signals for f in read_signals(p, b)]
        new = refit(b, feats, source=", ".join(p.name for p in from_signals))
        save_baseline(new, out)
        doc = {"baseline": new.id, "from": b.id, "path": str(out), "n_vectors": len(feats),
               "length_buckets": [{"lo": x.lo, "hi": x.hi, "n_calib": new.calibrator.n_calib(i)}
                                  for i, x in enumerate(new.calibrator.buckets)]}
        typer.echo(json.dumps(doc) if as_json else f"wrote {out} ({new.id}), recalibrated from {len(feats)} "
                   f"signal vectors recorded against {b.id}")
    except GuardrailError as e:
        _fail(e)
