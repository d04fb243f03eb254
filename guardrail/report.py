"""The JSON document of a scored text -- the shape every command and the proxy's report reuse.

```
{"scorer": {"id", "backend", "model", "weights", "tokenizer", "logprob_mode", "settings"},
 "side": "text", "n_chars": 42, "n_chunks": 1, "notes": [],
 "tokens": [{"text", "start", "end", "logprob", "flags", "token_id", "entropy"}, ...],
 "whole": {"nll", "ppl", "bits_per_byte", "n_tokens", "n_scored", "n_excluded", "n_clamped", "n_missing",
           "n_special", "n_no_context", "mean_entropy", "entropy_k"},
 "windows": [{"width", "effective_width", "nll", "ppl", "start", "end", "token_start", "token_end"}, ...],
 "max_window": {... the top window of the first width ...} | null}
```
Offsets are Python string indices into the scored text, ``end`` exclusive.
"""

from __future__ import annotations

from typing import Any

from .backends.base import ScorerInfo
from .scoring import TextScore
from .types import Segment

__all__ = ["score_document"]


def _r(x: float | None, nd: int = 6) -> float | None:
    return None if x is None else round(x, nd)


def score_document(
    seg: Segment, score: TextScore, scorer: ScorerInfo, *, tokens: bool = True
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "scorer": scorer.report(),
        "side": seg.side.value,
        "n_chars": len(seg.text),
        "n_chunks": seg.n_chunks,
        "notes": list(seg.notes),
    }
    if tokens:
        doc["tokens"] = [
            {
                "text": t.text, "start": t.start, "end": t.end, "logprob": _r(t.logprob),
                "flags": sorted(f.value for f in t.flags), "token_id": t.token_id,
                "entropy": _r(t.entropy),
                **({"top": [{"token": a.token, "logprob": _r(a.logprob)} for a in t.top]} if t.top else {}),
            }
            for t in seg.tokens
        ]
    doc["whole"] = score.whole.model_dump()
    doc["windows"] = [w.model_dump() for w in score.windows]
    doc["max_window"] = score.max_window.model_dump() if score.max_window else None
    return doc
