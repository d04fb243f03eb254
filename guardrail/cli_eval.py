"""``guardrail eval prompts | outputs | calibration | stream``: what the guardrail catches and what it costs."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer

from .cli_baseline import CacheOpt, ModelOpt, _alpha, _cache, _fail, _progress
from .errors import GuardrailError

app = typer.Typer(no_args_is_help=True, help="Evaluate on labelled data: ours vs the published comparators.")

DataOpt = Annotated[list[Path], typer.Option("--data", help="JSONL file(s); repeat --data or list several")]
LabelOpt = Annotated[str, typer.Option("--label-field", help="field holding the label")]
PosOpt = Annotated[str, typer.Option("--positive-labels", help="comma-separated labels counted as positives")]
NegOpt = Annotated[str, typer.Option("--negative-labels", help="comma-separated labels counted as negatives")]
ReportOpt = Annotated[str | None, typer.Option("--report-labels", help="labels whose flag rate is only reported")]
GroupOpt = Annotated[str | None, typer.Option("--group-field", help="field whose values get a TPR each (by_group)")]
LimitOpt = Annotated[int | None, typer.Option("--limit", help="a seeded random sample of at most N records per file")]
SeedOpt = Annotated[int, typer.Option("--seed", help="seed of --limit sampling and of the bootstrap")]
BootOpt = Annotated[int, typer.Option("--n-boot", help="bootstrap resamples for the 95 % intervals")]
PlotsOpt = Annotated[Path | None, typer.Option("--plots", help="write PNG plots into this directory")]
AlphaOpt = Annotated[float, typer.Option("--alpha", help="target false-alarm rate of the operating thresholds")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON document to stdout")]


def _extra_files(files: list[str] | None) -> list[Path]:
    return [Path(f) for f in files or []]


@app.command(context_settings={"allow_extra_args": True})
def prompts(
    ctx: typer.Context,
    data: DataOpt,
    text_field: Annotated[str, typer.Option("--text-field", help="field holding the prompt")] = "prompt",
    label_field: LabelOpt = "label",
    positive_labels: PosOpt = "adversarial",
    negative_labels: NegOpt = "benign",
    report_labels: ReportOpt = None,
    group_field: GroupOpt = None,
    span_field: Annotated[str, typer.Option("--span-field", help="field holding the attack's text (its last occurrence in the prompt is the span)")] = "adv_suffix",
    baseline: Annotated[str, typer.Option("--baseline", help="prompt-side baseline: shipped domain id or JSON file")] = "general",
    alpha: AlphaOpt = 0.01,
    limit: LimitOpt = None,
    seed: SeedOpt = 0,
    n_boot: BootOpt = 1000,
    plots: PlotsOpt = None,
    cache_dir: CacheOpt = None,
    model: ModelOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Prompt screening: AUROC, AUPRC, TPR at 0.1/1/5 % FPR with 95 % intervals, flag rates, localisation."""
    _labelled(ctx, data, side="prompt", text_field=text_field, label_field=label_field, positive=positive_labels,
              negative=negative_labels, report=report_labels, group_field=group_field, span_field=span_field or None,
              context_field=None, baseline=baseline, alpha=alpha, limit=limit, seed=seed, n_boot=n_boot, plots=plots,
              cache_dir=cache_dir, model=model, as_json=as_json)


def _labelled(ctx: typer.Context, data: list[Path], *, side: str, text_field: str, label_field: str, positive: str,
              negative: str, report: str | None, group_field: str | None, span_field: str | None,
              context_field: str | None, baseline: str, alpha: float, limit: int | None, seed: int, n_boot: int,
              plots: Path | None, cache_dir: Path | None, model: Path | None, as_json: bool) -> None:
    """``eval prompts`` and ``eval outputs``: read labelled records, score them, print the document."""
    from .backends.llamacpp import LlamaCppBackend
    from .baselines.registry import resolve
    from .evaluation import report as plots_of
    from .evaluation.data import LabelSpec, load_records
    from .evaluation.outputs import eval_outputs
    from .evaluation.prompts import eval_prompts
    from .evaluation.reference import load_reference

    try:
        a = _alpha(alpha)
        labels = LabelSpec.parse(positive, negative, report)
        files = [*data, *_extra_files(ctx.args)]
        records = load_records(files, text_field=text_field, label_field=label_field, labels=labels,
                               group_field=group_field, span_field=span_field, context_field=context_field,
                               limit=limit, seed=seed)
        backend = LlamaCppBackend(model)
        b = resolve(baseline, side)
        b.check_scorer(backend.scorer, baseline)
        ref = load_reference(scorer=backend.scorer)
        run = eval_prompts if side == "prompt" else eval_outputs
        with _progress() as bar:
            task = bar.add_task("scoring", total=None)
            ev = asyncio.run(run(backend, records, labels, b, ref, alpha=a, cache=_cache(cache_dir),
                                 progress=lambda n: bar.advance(task, n), n_boot=n_boot, seed=seed))
        ev.doc["files"] = [str(f) for f in files]
        if plots is not None:
            make = plots_of.prompt_plots if side == "prompt" else plots_of.output_plots
            ev.doc["plots"] = [str(p) for p in make(ev, plots)]
        typer.echo(json.dumps(ev.doc) if as_json else _table(ev.doc))
    except GuardrailError as e:
        _fail(e)


def _table(doc: dict) -> str:
    rows = [f"{doc['command']}: n={doc['n']} ({doc['counts']}), dropped as training data: {doc['n_dropped_training']}",
            f"{'method':28s} {'AUROC':>7s} {'TPR@0.1%':>9s} {'TPR@1%':>7s} {'TPR@5%':>7s}  flag rates at the operating threshold"]
    for name, m in doc["methods"].items():
        t = m["tpr_at_fpr"]
        rates = ", ".join(f"{k} {v:.3f}" for k, v in m["flag_rate"].items())
        rows.append(f"{name:28s} {m['auroc']:7.4f} {t['0.001']:9.4f} {t['0.01']:7.4f} {t['0.05']:7.4f}  {rates}")
    return "\n".join(rows)


@app.command(context_settings={"allow_extra_args": True})
def calibration(
    ctx: typer.Context,
    data: Annotated[list[Path], typer.Option("--data", help="domain corpus file(s); the file stem names the domain's baseline")],
    text_field: Annotated[str, typer.Option("--text-field", help="field holding the text")] = "text",
    alphas: Annotated[str, typer.Option("--alphas", help="target false-alarm rates, comma separated")] = "0.01,0.05",
    side: Annotated[str, typer.Option("--side", help="baseline side to look up: text, prompt or output")] = "text",
    compare_global: Annotated[bool, typer.Option("--global/--no-global", help="also measure the pooled global baseline")] = True,
    limit: Annotated[int | None, typer.Option("--limit", help="at most N units per domain (default: the baseline's own cap)")] = None,
    plots: PlotsOpt = None,
    cache_dir: CacheOpt = None,
    model: ModelOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Realised false-alarm rate per domain vs target alpha, on documents the baselines were not fitted on."""
    from .backends.llamacpp import LlamaCppBackend
    from .baselines.registry import resolve, shipped
    from .errors import ConfigError
    from .evaluation.calibration import eval_calibration

    try:
        try:
            al = [_alpha(float(x)) for x in alphas.split(",") if x.strip()]
        except ValueError:
            raise ConfigError(f"--alphas takes numbers separated by commas, got {alphas!r}") from None
        if not al:
            raise ConfigError("--alphas is empty")
        files = [*data, *_extra_files(ctx.args)]
        backend = LlamaCppBackend(model)

        bases = {}
        for f in files:  # every baseline resolved before any scoring: a bad name fails at once
            bases[f.stem] = resolve(f.stem, side)
            bases[f.stem].check_scorer(backend.scorer, f.stem)

        g = None
        if compare_global and ("global", "text") in shipped():
            g = resolve("global", "text")
            g.check_scorer(backend.scorer, "global")
        with _progress() as bar:
            task = bar.add_task("scoring", total=None)
            doc = asyncio.run(eval_calibration(backend, files, bases.__getitem__, alphas=al, text_field=text_field,
                                               global_baseline=g, limit=limit, cache=_cache(cache_dir),
                                               progress=lambda n: bar.advance(task, n)))
        if plots is not None:
            from .evaluation.plots import calibration_plot

            rows = [{"name": f"{d}{suffix}", "alpha": r["alpha"], "flag_rate": r["flag_rate"], "lo": r["ci99"][0],
                     "hi": r["ci99"][1]}
                    for key, suffix in (("domains", ""), ("global", " (global)")) for d, v in doc.get(key, {}).items()
                    for r in v["rates"]]
            doc["plots"] = [str(calibration_plot(rows, Path(plots) / "calibration.png",
                                                 "Realised false-alarm rate vs target alpha"))]
        if as_json:
            typer.echo(json.dumps(doc))
        else:
            for key in ("domains", "global"):
                for d, v in doc.get(key, {}).items():
                    cells = "  ".join(f"a={r['alpha']:g}: {r['flags']}/{r['n']} = {r['flag_rate']:.4f}"
                                      f"{'' if r['within'] else ' (outside)'}" for r in v["rates"])
                    typer.echo(f"{v['baseline']:48s} {d:20s} {cells}")
    except GuardrailError as e:
        _fail(e)


@app.command(context_settings={"allow_extra_args": True})
def outputs(
    ctx: typer.Context,
    data: DataOpt,
    text_field: Annotated[str, typer.Option("--text-field", help="field holding the output")] = "output",
    context_field: Annotated[str | None, typer.Option("--context-field", help="field holding what the output answers (instruction, question); the output is scored as the reply to it")] = None,
    label_field: LabelOpt = "label",
    positive_labels: PosOpt = "degenerate",
    negative_labels: NegOpt = "reference",
    report_labels: ReportOpt = None,
    group_field: GroupOpt = None,
    baseline: Annotated[str, typer.Option("--baseline", help="output-side baseline: shipped domain id or JSON file")] = "general",
    alpha: AlphaOpt = 0.01,
    limit: LimitOpt = None,
    seed: SeedOpt = 0,
    n_boot: BootOpt = 1000,
    plots: PlotsOpt = None,
    cache_dir: CacheOpt = None,
    model: ModelOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Output-side signals: AUROC, TPR at fixed FPR, flag rates, calibration (ECE, reliability plot)."""
    _labelled(ctx, data, side="output", text_field=text_field, label_field=label_field, positive=positive_labels,
              negative=negative_labels, report=report_labels, group_field=group_field, span_field=None,
              context_field=context_field, baseline=baseline, alpha=alpha, limit=limit, seed=seed, n_boot=n_boot,
              plots=plots, cache_dir=cache_dir, model=model, as_json=as_json)


@app.command()
def stream(
    data: DataOpt,
    text_field: Annotated[str, typer.Option("--text-field", help="field holding the prompt")] = "prompt",
    temperatures: Annotated[str, typer.Option("--temperatures", help="sampling temperatures, comma separated")] = "0,0.7,1.8",
    max_tokens: Annotated[int, typer.Option("--max-tokens", help="tokens per generation")] = 80,
    alpha: Annotated[float, typer.Option("--alpha", help="whole-stream false-abort budget")] = 0.01,
    baseline: Annotated[str | None, typer.Option("--baseline", help="output baseline name (default: the own-generation regime nearest each temperature)")] = None,
    check_every: Annotated[int, typer.Option("--check-every", help="checkpoint interval when the baseline has no stream calibration")] = 16,
    split: Annotated[str | None, typer.Option("--split", help="only prompts of this split (train, calib, test): test for prompts held apart from fitting")] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="at most N prompts (a fixed pseudo-random sample)")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="salt of the per-prompt seeds (default: the unsalted rule the stored generations use)")] = None,
    store: Annotated[Path | None, typer.Option("--store", help="generation store (default ~/.cache/guardrail/generations.jsonl)")] = None,
    model: ModelOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Generate with the embedded model (stored: a rerun replays), stream each generation through the assessor:
    whole-stream abort rates of normal generations per temperature, and how fast loops are cut."""
    from .backends.llamacpp import LlamaCppBackend
    from .baselines.corpus import read_records
    from .baselines.registry import nearest_regime, regimes, resolve
    from .baselines.splits import split_of
    from .errors import ConfigError
    from .evaluation.generations import GenerationStore, ordered_prompts, seed_for
    from .evaluation.stream_eval import eval_streams

    try:
        a = _alpha(alpha)
        temps = {t.strip(): float(t) for t in temperatures.split(",") if t.strip()}
        if not temps or any(not 0 <= t <= 5 for t in temps.values()):
            raise ConfigError(f"--temperatures: comma-separated values in [0, 5], got {temperatures!r}")
        if split not in (None, "train", "calib", "test"):
            raise ConfigError(f"--split must be train, calib or test, got {split!r}")
        texts = [r.text for p in data for r in read_records(p, text_field)]
        prompts = ordered_prompts([t for t in texts if split is None or split_of(t) == split])[:limit]
        if not prompts:
            raise ConfigError("no prompt to generate from (check --data, --text-field and --split)")
        found = regimes(baseline or "general")
        fixed = None if found else resolve(baseline or "general", "output")
        backend = LlamaCppBackend(model)
        for b in [*found, *([fixed] if fixed else [])]:
            b.check_scorer(backend.scorer, b.id)

        def baseline_for(t: float):
            return fixed if fixed is not None else nearest_regime(found, t)

        gs = GenerationStore(store)
        gens: dict = {k: [] for k in temps}

        async def generate(advance) -> None:
            for k, t in temps.items():
                for p in prompts:
                    g, _ = await gs.generate(backend, p, t, seed_for(p, seed), max_tokens)
                    gens[k].append(g)
                    advance()

        with _progress() as bar:
            task = bar.add_task("generating", total=len(prompts) * len(temps))
            asyncio.run(generate(lambda: bar.advance(task, 1)))
        backend.close()
        doc = eval_streams(gens, baseline_for, alpha=a, check_every=check_every)
        doc["max_tokens"], doc["n_prompts"] = max_tokens, len(prompts)
        if as_json:
            typer.echo(json.dumps(doc, indent=1))
        else:
            for k, row in doc["by_temperature"].items():
                typer.echo(f"T={k}: {row['n']} normal, abort rate {row['abort_rate']:.3f} (99 % interval "
                           f"{row['binomial_99'][0]:.3f}-{row['binomial_99'][1]:.3f}, {row['method']}); per-prefix "
                           f"{row['per_prefix_abort_rate']:.3f}; {row['n_loops']} loops")
            lo = doc["loops"]
            typer.echo(f"loops: {lo['n']}, cut {lo['abort_rate']}, median {lo['median_tokens_after_onset']} tokens "
                       "after onset")
    except GuardrailError as e:
        _fail(e)
