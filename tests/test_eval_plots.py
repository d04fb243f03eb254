"""guardrail.evaluation.plots: each figure is written as a real PNG; importing the module skips matplotlib."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from guardrail.evaluation.metrics import reliability, roc_curve
from guardrail.evaluation.plots import calibration_plot, histogram_plot, reliability_plot, roc_plot

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _check_png(path: Path, expected: Path) -> None:
    assert path == expected
    assert path.is_file()
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert path.stat().st_size > 5_000  # a drawn figure, not an empty canvas


def _data(seed: int = 0, n: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.3).astype(int)
    return rng.normal(size=n) + 1.2 * labels, labels


def test_roc_plot(tmp_path: Path) -> None:
    scores, labels = _data()
    curves = {
        "perplexity": roc_curve(scores, labels),
        "window": roc_curve(scores + np.random.default_rng(1).normal(size=scores.size), labels),
    }
    out = tmp_path / "nested" / "dir" / "roc.png"
    _check_png(roc_plot(curves, out, "ROC"), out)


def test_histogram_plot(tmp_path: Path) -> None:
    scores, labels = _data()
    by_label = {"benign": scores[labels == 0], "attack": scores[labels == 1]}
    out = tmp_path / "sub" / "hist.png"
    _check_png(histogram_plot(by_label, out, "scores", threshold=1.5, xlabel="window NLL"), out)
    out2 = tmp_path / "hist_no_threshold.png"
    _check_png(histogram_plot(by_label, str(out2), "scores"), out2)


def test_calibration_plot(tmp_path: Path) -> None:
    rows = []
    for name, bias in (("conformal", 1.0), ("fixed", 1.8)):
        for alpha in (0.001, 0.01, 0.05, 0.1):
            rate = alpha * bias
            rows.append({"name": name, "alpha": alpha, "flag_rate": rate, "lo": rate * 0.7, "hi": rate * 1.3})
    rows.append({"name": "fixed", "alpha": 0.0005, "flag_rate": 0.0, "lo": 0.0, "hi": 0.001})  # zero on log axis
    out = tmp_path / "cal" / "calibration.png"
    _check_png(calibration_plot(rows, out, "flag rate vs alpha"), out)


def test_reliability_plot(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    probs = rng.random(1000)
    labels = (rng.random(1000) < probs**1.3).astype(int)
    out = tmp_path / "rel" / "reliability.png"
    _check_png(reliability_plot(reliability(probs, labels), out, "reliability"), out)


def test_import_does_not_import_matplotlib() -> None:
    code = (
        "import sys, guardrail.evaluation.plots as p; "
        "assert callable(p.roc_plot); "
        "bad = [m for m in sys.modules if m == 'matplotlib' or m.startswith('matplotlib.')]; "
        "assert not bad, bad; print('ok')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
