"""One split rule for fitting and evaluation alike: by a hash of the group key, never by record or chunk.

Group keys: the document for corpora (its text), ``goal`` for attack prompts, the text otherwise.  A group
lands in ``train`` (per-signal reference distributions, detector), ``calib`` (conformal thresholds) or
``test`` (held back: realised false-alarm rates, evaluation).  Fitted artefacts record the hashes of their
training groups so that evaluation can drop records seen in fitting.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Literal

__all__ = ["SALT", "Split", "first_by_group", "fold_of", "group_hash", "split_of"]

Split = Literal["train", "calib", "test"]
SALT = "guardrail-split-v1"
FRACTIONS: tuple[tuple[Split, float], ...] = (("train", 0.4), ("calib", 0.3), ("test", 0.3))


def group_hash(key: str) -> str:
    return hashlib.sha256(f"{SALT}\x00{key}".encode("utf-8", "surrogatepass")).hexdigest()[:16]


def split_of(key: str) -> Split:
    u = int(group_hash(key), 16) / 16**16  # uniform in [0, 1)
    acc = 0.0
    for name, frac in FRACTIONS:
        acc += frac
        if u < acc:
            return name
    return FRACTIONS[-1][0]


def fold_of(key: str, k: int) -> int:
    """The cross-conformal fold (0..k-1) of a group: a hash salted apart from the split's."""
    return int(group_hash("fold\x00" + key), 16) % k


def first_by_group(groups: Sequence[str], cap: int | None) -> list[int]:
    """Indices of at most ``cap`` items, the first in the order of their group key's hash (ties in input order):
    a reproducible sample spread over groups, the same for fitting and for evaluation."""
    order = sorted(range(len(groups)), key=lambda i: (group_hash(groups[i]), i))
    return order if cap is None else order[:cap]
