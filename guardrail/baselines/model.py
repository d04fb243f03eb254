"""The Baseline: everything a threshold depends on, in one JSON file (no pickle).

A baseline is fitted for one (scorer, domain, side, logprob mode).  The file records the scorer (model,
tokenizer, logprob mode, every setting in its id), domain, side, window widths, how units were cut, the
corpus hash and sizes, the calibrator (reference distributions and calibration scores), target alphas, fit
date, the hashes of the groups used in fitting (so evaluations can drop them), the realised flag rates on the
held-back split, and a SHA-256 checksum of all that: an edited file is refused as tampered.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from ..backends.base import ScorerInfo
from ..errors import ConfigError
from ..types import Segment
from .conformal import Assessment, Calibrator
from .detector import Detector
from .stream_calibration import StreamCalibration

__all__ = ["FORMAT", "Baseline", "BaselineError", "RateReport", "load_baseline", "save_baseline"]

FORMAT = "guardrail.baseline/2"


class BaselineError(ConfigError):
    """A baseline file is unreadable, invalid, tampered with, or for another scorer."""


class RateReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alpha: float
    n: int
    flags: int
    flag_rate: float


class Baseline(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal["guardrail.baseline/2"] = FORMAT
    domain: str
    side: Literal["prompt", "output", "text"]
    scorer_id: str
    model: str
    tokenizer: str
    logprob_mode: str
    widths: list[int]
    unit: dict[str, Any]
    corpus: dict[str, Any]
    calibrator: Calibrator  # its parts hold the multivariate detector(s)
    target_alphas: list[float]
    fit_date: str
    training_groups: list[str] = Field(default_factory=list)
    test_rates: list[RateReport] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    # k behind the fitting segments' entropies: the vocabulary size when exact (the embedded scorer), the number of
    # top logprobs when a lower bound (an API): a baseline fitted with one kind is refused for the other
    entropy_k: int | None = None
    # output baselines of a model's own generations: the whole-stream early-abort rule calibrated on generations
    # apart from the fitting ones (stream_calibration.py); None: streams fall back to Bonferroni over checkpoints
    stream: StreamCalibration | None = None
    checksum: str = ""
    _id: tuple | None = PrivateAttr(default=None)  # (what the id is made of, the id)

    @property
    def id(self) -> str:
        """``domain/side@<12 hex of the scorer id>#<8 hex of the content>``: short, unique, stable."""
        key = (self.domain, self.side, self.scorer_id, self.checksum)
        memo = self.__pydantic_private__["_id"]  # type: ignore[index]  # (read on every verdict)
        if memo is None or memo[0] != key or not self.checksum:
            sc = hashlib.sha256(self.scorer_id.encode()).hexdigest()[:12]
            memo = (key, f"{self.domain}/{self.side}@{sc}#{(self.checksum or self._digest())[:8]}")
            self.__pydantic_private__["_id"] = memo  # type: ignore[index]
        return memo[1]

    def _digest(self) -> str:
        body = self.model_dump(mode="json", exclude={"checksum"})
        for optional in ("entropy_k", "stream"):  # files written before the field existed keep their checksum
            if body.get(optional) is None:
                body.pop(optional, None)
        if body.get("stream"):  # so do stream calibrations written before StreamCalibration.min_tokens / source
            body["stream"] = {k: v for k, v in body["stream"].items()
                              if not (k in ("min_tokens", "source") and v is None)}
        return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    def check_scorer(self, scorer: ScorerInfo, where: str = "baseline") -> None:
        for field, mine, theirs in (
            ("model", self.model, scorer.model), ("tokenizer", self.tokenizer, scorer.tokenizer),
            ("logprob mode", self.logprob_mode, scorer.logprob_mode.value), ("scorer", self.scorer_id, scorer.id),
        ):
            if mine != theirs:
                raise BaselineError(
                    f"{where}: fitted for {field} {mine!r}, but the scorer in use has {theirs!r}; "
                    f"fit a baseline for this scorer (guardrail baseline fit)"
                )

    def check_segment(self, seg: Segment, where: str = "baseline") -> None:
        """Refuse a segment this baseline cannot judge: another scorer, another side, another kind of entropy.
        (Widths need no check: the features are computed with the baseline's own widths.)"""
        if seg.scorer_id != self.scorer_id:
            raise BaselineError(
                f"{where}: baseline {self.id} was fitted for scorer {self.scorer_id!r}; this text was scored by "
                f"{seg.scorer_id!r}: fit a baseline for that scorer (guardrail baseline fit) or score with the "
                f"baseline's scorer")
        if self.side != "text" and seg.side.value not in (self.side, "text"):
            raise BaselineError(f"{where}: baseline {self.id} is for the {self.side} side; this is a "
                                f"{seg.side.value} segment")
        if self.entropy_k is not None and seg.entropy_k is not None and seg.entropy_k != self.entropy_k:
            raise BaselineError(
                f"{where}: baseline {self.id} was fitted with {_entropy_kind(self.entropy_k)}; this text has "
                f"{_entropy_kind(seg.entropy_k)}: entropy signals would not be comparable")

    @property
    def detector(self) -> Detector | None:
        """The multivariate detector of the first calibration part (one per fold under cross-conformal)."""
        return self.calibrator.parts[0].detector

    @property
    def resolution(self) -> float:
        """The smallest p-value the decision can give in its coarsest length bucket, 1 / (n + 1)."""
        return self.calibrator.resolution()

    def check_tier(self, p: float, *, tail: bool = False, where: str = "tier") -> None:
        """Refuse a decision threshold below the calibration's resolution: no conformal p-value can reach it, so
        the tier would never fire -- unless it says it ranks by the tail statistic (``Assessment.tail_p``, an
        exponential continuation of the calibration tail: a ranking, not a guarantee)."""
        if not 0 < p < 1:
            raise BaselineError(f"{where}: p-value threshold must be in (0, 1), got {p}")
        if p < self.resolution and not tail:
            raise BaselineError(
                f"{where}: p <= {p:g} is below the resolution of baseline {self.id} ({self.resolution:.2g} = "
                f"1/(n+1) in its smallest length bucket): no conformal p-value can reach it; use a tier >= "
                f"{self.resolution:.2g}, or mark the tier as using the tail statistic (tail_p)")

    def assess(self, feat: dict[str, float], alpha: float) -> Assessment:
        return self.calibrator.assess(feat, alpha)


def _entropy_kind(k: int) -> str:
    return f"entropies over {k} alternatives" + (" (exact)" if k > 1000 else " (a top-k lower bound)")


def save_baseline(b: Baseline, path: str | Path) -> Path:
    b.checksum = b._digest()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    # compact: the references are long lists of numbers (one per line would double the file)
    tmp.write_text(json.dumps(b.model_dump(mode="json"), sort_keys=True, separators=(",", ":")) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def load_baseline(path: str | Path, scorer: ScorerInfo | None = None) -> Baseline:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise BaselineError(f"{path}: cannot read baseline ({e.strerror or e})") from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BaselineError(f"{path}: not a JSON baseline file ({e})") from None
    fmt = data.get("format") if isinstance(data, dict) else None
    if isinstance(fmt, str) and fmt.startswith("guardrail.baseline/") and fmt != FORMAT:
        raise BaselineError(f"{path}: baseline format {fmt!r}, this guardrail reads {FORMAT!r}: refit it "
                            f"(guardrail baseline fit)")
    if fmt != FORMAT:
        raise BaselineError(f"{path}: not a guardrail baseline (format must be {FORMAT!r})")
    try:
        b = Baseline.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        raise BaselineError(f"{path}: invalid baseline at {loc}: {err['msg']}") from None
    if b.checksum != b._digest():
        raise BaselineError(f"{path}: checksum mismatch: the file was modified after fitting (tampered)")
    if scorer is not None:
        b.check_scorer(scorer, str(path))
    return b
