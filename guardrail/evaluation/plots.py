"""PNG figures for the evaluation report: ROC curves, score histograms, flag-rate calibration, reliability.

matplotlib is imported lazily, inside each function, with the non-interactive "Agg" backend, so importing this
module costs nothing and needs no display.  Every function creates the parent directory, writes the PNG,
closes the figure and returns the path.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["calibration_plot", "histogram_plot", "reliability_plot", "roc_plot"]

_FPR_MIN = 1e-4
_DPI = 120


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Figure, path: str | Path) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.tight_layout()
        fig.savefig(out, format="png", dpi=_DPI)
    finally:
        _pyplot().close(fig)
    return out


def roc_plot(curves: dict[str, tuple[ArrayLike, ArrayLike]], path: str | Path, title: str) -> Path:
    """ROC curves, one per method: log-x FPR (1e-4 to 1) on the left, linear axes on the right.

    ``curves`` maps a method name to ``(fpr, tpr)`` as :func:`guardrail.evaluation.metrics.roc_curve` returns.
    On the log panel FPR values below 1e-4 (including the starting 0) are drawn at 1e-4.
    """
    plt = _pyplot()
    fig, (ax_log, ax_lin) = plt.subplots(1, 2, figsize=(11, 4.8))
    for name, (fpr, tpr) in curves.items():
        f, t = np.asarray(fpr, dtype=float), np.asarray(tpr, dtype=float)
        (line,) = ax_log.step(np.maximum(f, _FPR_MIN), t, where="post", label=name)
        ax_lin.plot(f, t, color=line.get_color(), label=name)
    grid = np.logspace(np.log10(_FPR_MIN), 0, 200)
    ax_log.plot(grid, grid, color="grey", linestyle=":", linewidth=1, label="chance")
    ax_lin.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="chance")
    ax_log.set_xscale("log")
    ax_log.set_xlim(_FPR_MIN, 1.0)
    ax_log.set_title("log FPR")
    ax_lin.set_xlim(0.0, 1.0)
    ax_lin.set_title("linear")
    for ax in (ax_log, ax_lin):
        ax.set_ylim(0.0, 1.02)
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.grid(True, which="both", alpha=0.3)
    ax_log.legend(loc="lower right", fontsize="small")
    fig.suptitle(title)
    return _save(fig, path)


def histogram_plot(
    scores_by_label: dict[str, ArrayLike],
    path: str | Path,
    title: str,
    threshold: float | None = None,
    xlabel: str = "score",
) -> Path:
    """Overlaid density-normalised histograms, one per label, on shared bins; a dashed line at ``threshold``."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    arrays = {k: np.asarray(v, dtype=float) for k, v in scores_by_label.items()}
    finite = [a[np.isfinite(a)] for a in arrays.values()]
    pooled = np.concatenate(finite) if finite else np.empty(0)
    bins: Any = np.histogram_bin_edges(pooled, bins=50) if pooled.size else 50
    for label, a in arrays.items():
        a = a[np.isfinite(a)]
        if a.size:
            ax.hist(a, bins=bins, density=True, alpha=0.45, histtype="stepfilled", label=f"{label} (n={a.size})")
    if threshold is not None:
        ax.axvline(threshold, color="black", linestyle="--", linewidth=1.2, label=f"threshold = {threshold:.4g}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if arrays or threshold is not None:
        ax.legend(fontsize="small")
    return _save(fig, path)


def calibration_plot(rows: list[dict[str, Any]], path: str | Path, title: str) -> Path:
    """Realised flag rate against target alpha per name, with ``[lo, hi]`` error bars, on log-log axes with y = x.

    ``rows``: ``{"name", "alpha", "flag_rate", "lo", "hi"}``.  Zero rates cannot sit on a log axis and are drawn
    at a floor a decade below the smallest positive value.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 5.5))
    positive = [float(r[k]) for r in rows for k in ("alpha", "flag_rate", "lo", "hi") if float(r[k]) > 0]
    floor = min(positive) / 10 if positive else 1e-4
    by_name: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_name.setdefault(str(r["name"]), []).append(r)
    for name, rs in by_name.items():
        rs = sorted(rs, key=lambda r: float(r["alpha"]))
        alpha = np.maximum([float(r["alpha"]) for r in rs], floor)
        rate = np.maximum([float(r["flag_rate"]) for r in rs], floor)
        lo = np.maximum([float(r["lo"]) for r in rs], floor)
        hi = np.maximum([float(r["hi"]) for r in rs], floor)
        yerr = np.vstack([np.maximum(rate - lo, 0.0), np.maximum(hi - rate, 0.0)])
        ax.errorbar(alpha, rate, yerr=yerr, marker="o", markersize=4, capsize=3, label=name)
    top = max(positive) * 2 if positive else 1.0
    ax.plot([floor, top], [floor, top], color="grey", linestyle=":", linewidth=1, label="y = x")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(floor, top)
    ax.set_ylim(floor, top)
    ax.set_xlabel("target alpha")
    ax.set_ylabel("realised flag rate")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    return _save(fig, path)


def reliability_plot(rel: dict[str, Any], path: str | Path, title: str) -> Path:
    """Reliability diagram from :func:`guardrail.evaluation.metrics.reliability`: observed vs predicted, per bin.

    Bars span each bin at height ``frac_pos``; points sit at ``(mean_prob, frac_pos)``; empty bins are skipped.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 5.5))
    full = [b for b in rel["bins"] if b["n"]]
    if full:
        lo = np.array([b["lo"] for b in full], dtype=float)
        hi = np.array([b["hi"] for b in full], dtype=float)
        frac = np.array([b["frac_pos"] for b in full], dtype=float)
        mean = np.array([b["mean_prob"] for b in full], dtype=float)
        ax.bar(lo, frac, width=hi - lo, align="edge", alpha=0.3, edgecolor="C0", label="observed (bin)")
        ax.plot(mean, frac, marker="o", color="C0", label="observed at mean prob")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="perfect")
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("predicted probability")
    ax.set_ylabel("fraction positive")
    ax.set_title(f"{title} (ECE = {float(rel['ece']):.4f})")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", fontsize="small")
    return _save(fig, path)
