"""Calibrated per-domain baselines: is this text's surprise normal for its (model, domain, side, mode)?"""

from .conformal import Assessment, Calibrator, min_n
from .model import Baseline, BaselineError, load_baseline, save_baseline
from .registry import resolve

__all__ = ["Assessment", "Baseline", "BaselineError", "Calibrator", "load_baseline", "min_n", "resolve", "save_baseline"]
