"""Corpora and the units a baseline is fitted on.

A unit is a text as the guard will see it: a prompt, an output, or, for document corpora, a chunk cut from a
document at a whitespace boundary.  Chunk lengths cycle through a stated list of character lengths so that
the baseline covers short and long texts (thresholds are length-aware).  Every unit keeps its document's group
key, so splits never separate chunks of one document.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError

__all__ = ["Record", "Unit", "chunks_per_doc", "cut_units", "read_records", "spread_units", "visit_order"]


@dataclass(frozen=True, slots=True)
class Record:
    text: str
    group: str  # the group key: document text, goal, or the text itself
    meta: dict


@dataclass(frozen=True, slots=True)
class Unit:
    text: str
    group: str
    doc_index: int


def _decode(data: bytes, path: Path) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not valid UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start})") from None


def read_records(
    path: str | Path, text_field: str = "text", group_field: str | None = None, *, skip_empty: bool = True,
) -> list[Record]:
    """Records of a JSONL file (one JSON object a line) or of a plain text file (one document).
    ``skip_empty=False`` keeps records whose text is blank (so that indices match the file's records)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror or e})") from None
    body = _decode(raw, path)
    if path.suffix not in (".jsonl", ".json", ".ndjson"):
        if not body.strip():
            raise InputError(f"{path}: empty corpus")
        return [Record(body, body, {})]
    out: list[Record] = []
    # JSON Lines are separated by "\n" only: str.splitlines() would also cut at U+2028, U+0085 ... which JSON
    # strings may hold raw
    for lineno, line in enumerate(body.split("\n"), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
        if not isinstance(rec, dict) or text_field not in rec:
            raise InputError(f"{path}:{lineno}: record has no field {text_field!r}")
        text = rec[text_field]
        if not isinstance(text, str):
            raise InputError(f"{path}:{lineno}: field {text_field!r} is not a string")
        if skip_empty and not text.strip():
            continue
        group = text
        if group_field is not None:
            if group_field not in rec:
                raise InputError(f"{path}:{lineno}: record has no group field {group_field!r}")
            group = str(rec[group_field])
        out.append(Record(text, group, {k: v for k, v in rec.items() if k != text_field}))
    if not out:
        raise InputError(f"{path}: empty corpus (no record with a non-empty {text_field!r})")
    return out


def cut_units(
    records: Sequence[Record], lengths: Sequence[int] | None, *, max_per_doc: int, max_units: int | None = None
) -> list[Unit]:
    """Whole records as units (``lengths`` None), or chunks of the given character lengths, cycling, cut at
    the last whitespace before each target length; at most ``max_per_doc`` chunks per document, taken from
    its start."""
    units: list[Unit] = []
    for di, rec in enumerate(records):
        if lengths is None:
            units.append(Unit(rec.text, rec.group, di))
        else:
            text, pos, k = rec.text, 0, 0
            while pos < len(text) and k < max_per_doc:
                want = lengths[(di + k) % len(lengths)]
                end = min(len(text), pos + want)
                if end < len(text):
                    cut = text.rfind(" ", pos + want // 2, end)
                    cut = max(cut, text.rfind("\n", pos + want // 2, end))
                    end = cut if cut > pos else end
                chunk = text[pos:end].strip()
                if len(chunk) >= min(lengths) // 4:
                    units.append(Unit(chunk, rec.group, di))
                    k += 1
                pos = end
        if max_units is not None and len(units) >= max_units:
            return units[:max_units]
    return units


def spread_units(
    records: Sequence[Record], lengths: Sequence[int], *, max_units: int, max_per_doc: int = 16,
) -> tuple[list[int], list[Unit]]:
    """At most ``max_units`` chunks spread over as many documents as possible (at most
    ceil(max_units / documents) each, <= ``max_per_doc``), documents visited in a fixed pseudo-random order.

    The order hash is salted differently from the split hash: visiting documents in split-hash order would
    put every train document first, and a cap would then cut off the calibration and test splits.  A corpus
    too small to fill ``max_units`` (under 1.5x its character budget) is cut twice as fine; the lengths used
    are returned with the units.
    """
    ordered = visit_order(records)
    lengths = list(lengths)
    if sum(len(r.text) for r in ordered) < 1.5 * max_units * sum(lengths) / len(lengths):
        lengths = [n // 2 for n in lengths]
    per_doc = chunks_per_doc(max_units, len(ordered), max_per_doc)
    return lengths, cut_units(ordered, lengths, max_per_doc=per_doc, max_units=max_units)


def visit_order(records: Sequence[Record]) -> list[Record]:
    """The fixed pseudo-random order in which :func:`spread_units` visits documents."""
    from .splits import group_hash

    return sorted(records, key=lambda r: group_hash("order\x00" + r.group))


def chunks_per_doc(max_units: int, n_docs: int, max_per_doc: int) -> int:
    """Chunks :func:`spread_units` takes per document: ceil(max_units / documents), at most ``max_per_doc``."""
    return min(max_per_doc, -(-max_units // max(1, n_docs)))
