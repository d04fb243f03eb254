"""Recalibration from a deployment's own traffic, without storing text.

A baseline's references (and detector) say how surprising a text is; its calibration scores say how often
benign traffic is that surprising.  When a deployment's traffic differs from the fitting corpus (technical
jargon, another language, pasted code), the second part is what goes wrong, and it is the part that can be
refitted from what a deployment may keep: the **signal vector** of each request (the numbers of
:func:`guardrail.baselines.features.features`, no text, no token) with the id of the baseline it was assessed
against.

* :class:`SignalLog` appends one JSON line per assessed text: ``{"baseline", "side", "features", "ts"}``, in a
  file created 0600.  Shadow mode (report, never act) is the natural time to record.
* :func:`recalibrate` keeps the baseline's references and detectors and replaces each cross-conformal part's
  calibration scores with those of the recorded vectors of its fold (folds by a hash of each record's position
  in the file).  For traffic
  exchangeable with the recorded vectors, the flag rate is then alpha again (conformal guarantee; at worst
  about 2 alpha for cross-conformal).  Records of another baseline are refused.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..errors import InputError
from .conformal import min_n
from .model import Baseline, BaselineError
from .splits import fold_of

__all__ = ["SignalLog", "read_signals", "recalibrate"]


class SignalLog:
    """Append-only JSONL of signal vectors (no text).  One instance may be shared by concurrent requests: each
    record is one ``write`` of one line in append mode."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._f = os.fdopen(fd, "a", encoding="utf-8")

    def record(self, baseline: Baseline, feats: Mapping[str, float], ts: float | None = None) -> None:
        clean = {k: float(v) for k, v in feats.items() if isinstance(v, (int, float)) and math.isfinite(v)}
        line = json.dumps({"baseline": baseline.id, "side": baseline.side, "features": clean,
                           "ts": round(time.time() if ts is None else ts, 3)}, sort_keys=True)
        self._f.write(line + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> SignalLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_signals(path: str | Path, baseline: Baseline) -> list[dict[str, float]]:
    """The recorded vectors of ``baseline`` in ``path``; records of another baseline are an error (a vector
    means something only against the references it was computed for)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror or e})") from None
    out: list[dict[str, float]] = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            feats = rec["features"]
            bid = rec["baseline"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise InputError(f"{path}:{i}: not a signal record (JSON with 'baseline' and 'features')") from None
        if bid != baseline.id:
            raise BaselineError(f"{path}:{i}: recorded against baseline {bid}, not {baseline.id}: recalibrate the "
                                f"baseline the signals were recorded with")
        if not isinstance(feats, dict) or "n_scored" not in feats:
            raise InputError(f"{path}:{i}: features must be an object with n_scored")
        out.append({k: float(v) for k, v in feats.items()})
    return out


def recalibrate(baseline: Baseline, feats: Sequence[Mapping[str, float]], *, source: str = "signals") -> Baseline:
    """A copy of ``baseline`` whose calibration scores come from ``feats`` (see the module doc)."""
    cal = baseline.calibrator.model_copy(deep=True)
    k = len(cal.parts)
    per_part: list[list[Mapping[str, float]]] = [[] for _ in range(k)]
    for i, f in enumerate(feats):
        per_part[fold_of(str(i), k) if k > 1 else 0].append(f)
    for j, fs in enumerate(per_part):
        cal.set_calibration([f["n_scored"] for f in fs], [cal.score(f, j) for f in fs], part=j)
    alpha_min = min(baseline.target_alphas)
    short = [(b, cal.n_calib(b)) for b in range(len(cal.buckets)) if cal.n_calib(b) < min_n(alpha_min)]
    if short:
        b, n = short[0]
        lo, hi = cal.buckets[b].lo, cal.buckets[b].hi
        raise InputError(f"recalibration at alpha={alpha_min:g} needs at least {min_n(alpha_min)} recorded texts "
                         f"per length bucket; bucket {b} ({lo}-{hi if hi is not None else 'inf'} scored tokens) "
                         f"has {n}: record more traffic")
    notes = [*baseline.notes, f"recalibrated from {len(feats)} recorded signal vectors ({source}) on "
             f"{time.strftime('%Y-%m-%d', time.gmtime())}; references and detector from baseline {baseline.id}"]
    new = baseline.model_copy(update={
        "calibrator": cal, "notes": notes, "test_rates": [], "checksum": "",
        "corpus": {**baseline.corpus, "recalibration": {"from": baseline.id, "source": source,
                                                         "n_vectors": len(feats)}},
    })
    return new
