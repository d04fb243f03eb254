"""Plots of an evaluation run (PNG files via :mod:`guardrail.evaluation.plots`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import plots
from .run import EvalRun

__all__ = ["output_plots", "prompt_plots"]


def prompt_plots(ev: EvalRun, out_dir: Path) -> list[Path]:
    """ROC curves of every method; score histograms per label for each method."""
    out_dir = Path(out_dir)
    paths = [plots.roc_plot(ev.curves, out_dir / "roc.png", f"{ev.doc['command']}: ROC (positives vs negatives)")]
    labels = sorted({r.label for r in ev.records})
    for name, s in ev.scores.items():
        by_label = {lab: s[[i for i, r in enumerate(ev.records) if r.label == lab]] for lab in labels}
        by_label = {k: v[np.isfinite(v)] for k, v in by_label.items()}
        thr = ev.doc["methods"].get(f"{name}_recal", ev.doc["methods"].get(name, {})).get("threshold")
        paths.append(plots.histogram_plot(by_label, out_dir / f"hist_{name}.png", f"{name}: score per label",
                                          threshold=thr))
    return paths


def output_plots(ev: EvalRun, out_dir: Path) -> list[Path]:
    """ROC curves, score histograms per label, and the reliability plot of ours."""
    out_dir = Path(out_dir)
    paths = prompt_plots(ev, out_dir)
    cal = ev.doc["methods"].get("guardrail", {}).get("calibration")
    if cal:
        paths.append(plots.reliability_plot(cal, out_dir / "reliability_guardrail.png",
                                            f"guardrail: 1 - p-value vs label (ECE {cal['ece']:.3f})"))
    return paths
