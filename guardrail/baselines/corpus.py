"""Corpora and the units a baseline is fitted on.

A unit is a text as the guard will see it: a prompt, an output, or, for document corpora, a chunk cut from a
document at a whitespace boundary.  Chunk lengths cycle through a stated list of character lengths so that
the baseline covers short and long texts (thresholds are length-aware).  A baseline records its
:class:`UnitRecipe`, and checks cut new corpora by it: the guarantee is for units cut that way.  Every unit keeps its document's group
key, so splits never separate chunks of one document.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from ..errors import InputError

__all__ = ["Record", "Unit", "UnitRecipe", "chunks_per_doc", "cut_units", "read_records", "spread_units", "visit_order"]


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


def _chunks(text: str, lengths: Sequence[int], di: int) -> list[str]:
    """Every chunk of ``text``: lengths cycle from the document's index, each cut at the last whitespace before
    its target length; chunks shorter than a quarter of the smallest length are dropped."""
    out: list[str] = []
    pos, k = 0, 0
    while pos < len(text):
        want = lengths[(di + k) % len(lengths)]
        end = min(len(text), pos + want)
        if end < len(text):
            cut = text.rfind(" ", pos + want // 2, end)
            cut = max(cut, text.rfind("\n", pos + want // 2, end))
            end = cut if cut > pos else end
        chunk = text[pos:end].strip()
        if len(chunk) >= min(lengths) // 4:
            out.append(chunk)
            k += 1
        pos = end
    return out


def _spread(items: list[str], k: int) -> list[str]:
    """At most ``k`` of ``items``, evenly spaced over the whole list (the middle one when k = 1)."""
    m = len(items)
    return items if m <= k else [items[(2 * i + 1) * m // (2 * k)] for i in range(k)]


def cut_units(
    records: Sequence[Record], lengths: Sequence[int] | None, *, max_per_doc: int, max_units: int | None = None
) -> list[Unit]:
    """Whole records as units (``lengths`` None), or chunks of the given character lengths, cycling, cut at
    the last whitespace before each target length; at most ``max_per_doc`` chunks per document, spread evenly
    over the whole document (a document's opening is not its typical text: titles, imports, parties)."""
    units: list[Unit] = []
    for di, rec in enumerate(records):
        if lengths is None:
            units.append(Unit(rec.text, rec.group, di))
        else:
            units.extend(Unit(c, rec.group, di) for c in _spread(_chunks(rec.text, lengths, di), max_per_doc))
        if max_units is not None and len(units) >= max_units:
            return units[:max_units]
    return units


class UnitRecipe(BaseModel):
    """How a baseline's units were cut -- what its thresholds are calibrated for, so that checks and
    evaluations cut new texts the same way.  ``record``: one unit per record (prompts, outputs).  ``chunk``:
    chunks of ``chunk_chars`` characters (cycling), at most ``per_doc`` per document spread over it."""

    model_config = ConfigDict(extra="ignore")

    kind: Literal["chunk", "record"] = "record"
    chunk_chars: list[int] | None = None
    per_doc: int = 1

    @classmethod
    def of(cls, unit: Mapping[str, Any] | None) -> UnitRecipe:
        """The recipe of a baseline's ``unit`` description (kinds other than ``chunk`` are whole records)."""
        unit = unit or {}
        if unit.get("kind") != "chunk" or not unit.get("chunk_chars"):
            return cls(kind="record")
        return cls(kind="chunk", chunk_chars=list(unit["chunk_chars"]),
                   per_doc=int(unit.get("per_doc") or unit.get("max_per_doc") or 16))

    def cut(self, records: Sequence[Record], max_units: int | None = None) -> list[Unit]:
        if self.kind == "record":
            return cut_units(records, None, max_per_doc=1, max_units=max_units)
        return cut_units(visit_order(records), self.chunk_chars, max_per_doc=self.per_doc, max_units=max_units)

    def held_out(self, records: Sequence[Record], fitted: set[str]) -> list[Unit]:
        """Units of ``records`` not in the fitting groups (``fitted``: group hashes).  The whole file is cut
        first, then those units dropped, so that on a fitting corpus these are exactly its held-back units."""
        from .splits import group_hash

        return [u for u in self.cut(records) if group_hash(u.group) not in fitted]


def spread_units(
    records: Sequence[Record], lengths: Sequence[int], *, max_units: int, max_per_doc: int = 16,
) -> tuple[UnitRecipe, list[Unit]]:
    """At most ``max_units`` chunks spread over as many documents as possible (at most
    ceil(max_units / documents) each, <= ``max_per_doc``), documents visited in a fixed pseudo-random order.

    The order hash is salted differently from the split hash: visiting documents in split-hash order would
    put every train document first, and a cap would then cut off the calibration and test splits.  A corpus
    too small to fill ``max_units`` (under 1.5x its character budget) is cut twice as fine.  Returns the
    recipe (lengths and chunks per document used) with the units.
    """
    lengths = list(lengths)
    if sum(len(r.text) for r in records) < 1.5 * max_units * sum(lengths) / len(lengths):
        lengths = [n // 2 for n in lengths]
    recipe = UnitRecipe(kind="chunk", chunk_chars=lengths, per_doc=chunks_per_doc(max_units, len(records), max_per_doc))
    return recipe, recipe.cut(records, max_units)


def visit_order(records: Sequence[Record]) -> list[Record]:
    """The fixed pseudo-random order in which :func:`spread_units` visits documents."""
    from .splits import group_hash

    return sorted(records, key=lambda r: group_hash("order\x00" + r.group))


def chunks_per_doc(max_units: int, n_docs: int, max_per_doc: int) -> int:
    """Chunks :func:`spread_units` takes per document: ceil(max_units / documents), at most ``max_per_doc``."""
    return min(max_per_doc, -(-max_units // max(1, n_docs)))
