"""``guardrail eval prompts | outputs | calibration``: what the guardrail catches and what it costs."""

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
