"""Incremental teacher forcing of a growing reply: the embedded scorer judging another backend's stream.

A stream checkpoint teacher-forces the answer so far after its prompt.  Scored afresh, every checkpoint decodes the
prompt and the whole answer again, so a stream costs the square of its length.  A session keeps one sequence of
the engine's KV cache holding the tokens it last decoded, with the logprobs it read for them: the next checkpoint
of the same answer decodes only what changed -- the tokens after the longest common prefix with the last call,
plus the one before them, whose logits predict the first new token (a growing text can also re-tokenize its last
token or two) -- and reuses the rest.  Each logprob depends only on the tokens before it (a causal model), so the
reused values are the values a fresh call reads; they can differ from them in the last bits only where llama.cpp
groups the rows differently (tested against fresh scoring).

Sessions live in the engine's KV cache beside everything else, on sequences set apart for them.  They give way:
anything else that needs the cells (a long text, a generation, another session's new tokens) takes them, and a
session that lost some decodes them again at its next call.  Who gives way: first a session left idle (no call in
the last ``2 x capacity`` session calls: a stream that ended without closing it), whole; then the others, the
most recently used first, and only the tail that is needed (its first tokens stay).  Streams checked side by side
call their sessions in turn, so the one used longest ago is the next to be called: least-recently-used eviction
would take exactly the cells needed next, and with more answers than cells every checkpoint would decode its whole
answer again (measured: eight answers of ~390 tokens checked every 64 characters in 2,048 cells decoded 32,679
tokens that way, 11,599 this way, for 3,138 answer tokens).  Blocking and not thread-safe, like the engine.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ConfigError, ModelError
from .llama_rows import JobResult, logprob_rows

if TYPE_CHECKING:
    from .llama_engine import LlamaEngine

__all__ = ["ReplySessions"]


@dataclass(slots=True)
class _Session:
    seq: int
    tokens: np.ndarray  # int32: what the sequence holds, positions 0..len-1
    score_from: int
    top_k: int
    res: JobResult  # for targets score_from .. len(tokens) - 1
    last: int = 0  # ReplySessions.calls at its last call


class ReplySessions:
    """Per-key sequences of the engine's KV cache (the engine's ``sessions``)."""

    def __init__(self, engine: LlamaEngine, seqs: list[int]) -> None:
        self.engine = engine
        self.available = bool(seqs)  # no sequences set apart: the engine scores session calls afresh
        self.capacity = len(seqs)  # sessions that can live at once
        self._free = list(seqs)
        self._live: OrderedDict[str, _Session] = OrderedDict()  # least recently used first
        self.decoded = 0  # tokens decoded through sessions (what a checkpoint cost the model)
        self.calls = 0  # session calls so far (the clock of "idle")

    @property
    def cells(self) -> int:
        """KV cells the sessions hold."""
        return sum(len(s.tokens) for s in self._live.values())

    def __len__(self) -> int:
        return len(self._live)

    def drop(self, key: str) -> None:
        s = self._live.pop(key, None)
        if s is not None and self.engine.is_open:
            self._release(s)

    def evict(self, need: int = 0, keep: str | None = None) -> None:
        """Make room for ``need`` cells beside the sessions (never taking ``keep``'s): idle sessions go whole, then
        the others give up the tails they must, the most recently used first (see the module's doc); ``need`` 0:
        every session goes."""
        if not need:
            for key in [k for k in self._live if k != keep]:
                self._release(self._live.pop(key))
            return
        short = need - (self.engine.n_ctx - self.cells)
        for key in self._order(keep):
            if short <= 0:
                return
            s = self._live[key]
            cut = min(len(s.tokens), short)
            self._cut(key, s, len(s.tokens) - cut)
            short -= cut

    def _order(self, keep: str | None) -> list[str]:
        """Who gives way first: idle sessions (least recently used first), then the rest, most recently used first."""
        idle = [k for k, s in self._live.items() if k != keep and self.calls - s.last > 2 * self.capacity]
        rest = [k for k in reversed(self._live) if k != keep and k not in idle]
        return idle + rest

    def _cut(self, key: str, s: _Session, n: int) -> None:
        """Keep the first ``n`` tokens of a session (none: it goes), with their results."""
        if n <= 0 or not self.engine.seq_rm(s.seq, n):
            self._release(self._live.pop(key))
            return
        s.tokens = s.tokens[:n]
        s.res = _head(s.res, max(0, n - s.score_from))

    def _release(self, s: _Session) -> None:
        self.engine.seq_rm(s.seq, 0)
        self._free.append(s.seq)

    def score(self, key: str, tokens: np.ndarray, score_from: int, top_k: int) -> JobResult:
        """Teacher-force ``tokens``, reading the logprobs of ``tokens[score_from:]``; the session ``key`` keeps them
        for its next call.  ``tokens`` must fit the context, with at least one target: 1 <= score_from < len."""
        eng = self.engine
        n = len(tokens)
        if n > eng.n_ctx or not 1 <= score_from < n:
            raise ConfigError(f"a session scores 1 <= score_from < len <= {eng.n_ctx}, got {score_from}, {n}")
        tokens = np.asarray(tokens, dtype=np.int32)
        self.calls += 1
        s = self._live.pop(key, None)
        if s is not None and (s.score_from != score_from or s.top_k != top_k):
            self._release(s)
            s = None
        if s is None:
            empty = _empty(top_k)
            if not self._free:  # every session sequence taken: one gives way whole, in the order evict() uses
                self._release(self._live.pop(self._order(None)[0]))
            s = _Session(self._free.pop(), tokens[:0], score_from, top_k, empty)
        s.last = self.calls
        self._live[key] = s  # most recently used
        try:
            return self._extend(key, s, tokens, score_from, top_k)
        except BaseException:  # the cache may hold part of the new tokens: the session is dropped, not guessed at
            self.drop(key)
            raise

    def _extend(self, key: str, s: _Session, tokens: np.ndarray, score_from: int, top_k: int) -> JobResult:
        eng = self.engine
        n = len(tokens)
        m = len(s.tokens)
        k = min(m, n)
        diff = np.flatnonzero(s.tokens[:k] != tokens[:k])
        c = int(diff[0]) if diff.size else k  # the common prefix
        t0 = max(score_from, c)  # the first target not read before
        keep = max(0, min(c, n) - score_from)  # reused results: targets score_from .. score_from + keep - 1
        if t0 >= n:  # nothing new: the same text, or a prefix of it (score_from < n, so c == n)
            if not eng.seq_rm(s.seq, n):
                raise ModelError("the KV cache could not cut a session's sequence")
            s.tokens, s.res = tokens.copy(), _head(s.res, keep)
            return _copy(s.res)
        q = min(c, t0 - 1)  # decode from here: the changed tokens, and the one whose logits give target t0
        if not eng.seq_rm(s.seq, q):
            raise ModelError("the KV cache could not cut a session's sequence")
        s.tokens, s.res = tokens[:q].copy(), _head(s.res, keep)
        self.evict(need=n - q, keep=key)  # the room the new tokens take (the sessions give way to each other)
        parts = [s.res]
        for a in range(q, n, eng.n_batch):
            rows = [(int(tokens[p]), p, s.seq, t0 <= p + 1 < n) for p in range(a, min(n, a + eng.n_batch))]
            logits = eng.decode_rows(rows, keep=key)
            if logits.shape[0]:
                first = max(a, t0 - 1)
                parts.append(logprob_rows(logits, tokens[first + 1: first + 1 + logits.shape[0]].astype(np.int64),
                                          top_k))
        self.decoded += n - q
        s.tokens = tokens.copy()
        s.res = JobResult(*(np.concatenate([getattr(p, f) for p in parts])
                            for f in ("logprob", "entropy", "top_ids", "top_logprob")))
        return _copy(s.res)


def _empty(top_k: int) -> JobResult:
    return JobResult(np.empty(0, np.float32), np.empty(0, np.float32), np.empty((0, top_k), np.int32),
                     np.empty((0, top_k), np.float32))


def _head(r: JobResult, n: int) -> JobResult:
    return JobResult(r.logprob[:n], r.entropy[:n], r.top_ids[:n], r.top_logprob[:n])


def _copy(r: JobResult) -> JobResult:
    return JobResult(r.logprob.copy(), r.entropy.copy(), r.top_ids.copy(), r.top_logprob.copy())
