"""Labelled evaluation records: reading, label checks, sampling, and dropping what a fitted artefact saw.

A record's group key follows the split rule of the baselines (``goal`` where the record has one, else the
context an output answers, else the text), so that a record whose group was in a baseline's training data is recognised and dropped.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..baselines.corpus import read_records
from ..baselines.splits import group_hash
from ..errors import InputError

__all__ = ["EvalRecord", "LabelSpec", "drop_trained", "load_records", "suffix_span"]

GROUP_KEY_FIELD = "goal"


@dataclass(frozen=True)
class LabelSpec:
    positive: frozenset[str]
    negative: frozenset[str]
    report: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, positive: str, negative: str, report: str | None = None) -> LabelSpec:
        def split(s: str | None) -> frozenset[str]:
            return frozenset(x.strip() for x in (s or "").split(",") if x.strip())

        spec = cls(split(positive), split(negative), split(report))
        if not spec.positive or not spec.negative:
            raise InputError("give at least one positive and one negative label")
        both = (spec.positive & spec.negative) | (spec.report & (spec.positive | spec.negative))
        if both:
            raise InputError(f"label(s) {', '.join(sorted(both))} given in more than one role")
        return spec

    @property
    def known(self) -> frozenset[str]:
        return self.positive | self.negative | self.report

    def y(self, label: str) -> int | None:
        """1 positive, 0 negative, None reported only."""
        return 1 if label in self.positive else 0 if label in self.negative else None


@dataclass
class EvalRecord:
    text: str
    label: str
    source: str  # file name
    group: str  # group key (goal or text)
    span: tuple[int, int] | None = None  # the attack's text in ``text`` (last occurrence), if given
    group_value: str | None = None  # value of --group-field, for by_group
    context: str | None = None  # what an output answers (eval outputs)


def suffix_span(text: str, part: object) -> tuple[int, int] | None:
    """Character span of the last occurrence of ``part`` in ``text`` (None if absent or empty)."""
    if not isinstance(part, str) or not part.strip():
        return None
    i = text.rfind(part)
    return None if i < 0 else (i, i + len(part))


def load_records(
    paths: Sequence[str | Path], *, text_field: str, label_field: str, labels: LabelSpec,
    group_field: str | None = None, span_field: str | None = None, context_field: str | None = None,
    limit: int | None = None, seed: int = 0,
) -> list[EvalRecord]:
    """Records of every file; ``limit`` keeps a seeded random sample of at most N records per file."""
    if not paths:
        raise InputError("no data file given (--data)")
    out: list[EvalRecord] = []
    for p in paths:
        p = Path(p)
        recs = read_records(p, text_field, skip_empty=False)
        if limit is not None:
            if limit < 1:
                raise InputError(f"--limit must be >= 1, got {limit}")
            if len(recs) > limit:
                keep = sorted(random.Random(f"{seed}\x00{p.name}").sample(range(len(recs)), limit))
                recs = [recs[i] for i in keep]
        for r in recs:
            if label_field not in r.meta:
                raise InputError(f"{p}: a record has no label field {label_field!r}")
            label = str(r.meta[label_field])
            if label not in labels.known:
                raise InputError(
                    f"{p}: unknown label {label!r} (positive: {', '.join(sorted(labels.positive))}; negative: "
                    f"{', '.join(sorted(labels.negative))}; report: {', '.join(sorted(labels.report)) or '-'})"
                )
            ctx = None
            if context_field is not None:
                if context_field not in r.meta:
                    raise InputError(f"{p}: a record has no context field {context_field!r}")
                ctx = str(r.meta[context_field])
            gkey = r.meta.get(GROUP_KEY_FIELD)
            if not (isinstance(gkey, str) and gkey):
                gkey = ctx if ctx else r.text  # an output's group is what it answers
            out.append(EvalRecord(
                text=r.text, label=label, source=p.name, group=gkey,
                span=suffix_span(r.text, r.meta.get(span_field)) if span_field else None,
                group_value=None if group_field is None or r.meta.get(group_field) is None
                else str(r.meta[group_field]),
                context=ctx,
            ))
    ys = {labels.y(r.label) for r in out} - {None}
    if ys != {0, 1}:
        have = "positive" if 1 in ys else "negative" if 0 in ys else "no positive or negative"
        raise InputError(f"only {have} records in the data: AUROC needs both classes")
    return out


def drop_trained(records: Iterable[EvalRecord], trained: set[str]) -> tuple[list[EvalRecord], int]:
    """Records whose group hash is in ``trained`` are dropped; returns the rest and how many were dropped."""
    keep, dropped = [], 0
    for r in records:
        if group_hash(r.group) in trained:
            dropped += 1
        else:
            keep.append(r)
    return keep, dropped
