"""Generation on the embedded model (mixed into :class:`~guardrail.backends.llamacpp.LlamaCppBackend`): token by
token on the backend's worker thread, the stop strings held back (:class:`~guardrail.backends.stops.StopFilter`),
and the answer assembled into an output segment whose tokens spell it.
"""

from __future__ import annotations

import codecs
import math
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import numpy as np

from ..scoring import TokenArrays
from ..types import Flag, Generation, Segment, Side, Token, TopLogprob
from .base import GenerationRequest, TokenEvent
from .llama_engine import JobResult, logprob_rows
from .stops import StopFilter

__all__ = ["GenerationMixin"]


class GenerationMixin:
    if TYPE_CHECKING:  # provided by LlamaCppBackend
        _engine: Any
        _pieces: list[bytes]
        _keys: np.ndarray

        def _prompt_ids(self, req: GenerationRequest) -> np.ndarray: ...
        def _call(self, fn, *args) -> Any: ...
        def _segment(self, text: str, side: Side, ids: np.ndarray, res: JobResult, first_scored: int,
                     special: np.ndarray | None) -> Segment: ...

    async def _stream_locked(self, req: GenerationRequest) -> AsyncIterator[TokenEvent]:
        eng = self._engine
        p_ids = self._prompt_ids(req)
        rng = np.random.default_rng(req.seed)
        logits = await self._call(eng.start, p_ids)
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        stops = StopFilter(req.stop)  # nothing of a stop string is released; stops.text: everything generated
        pos = len(p_ids)
        for index in range(req.max_tokens):
            tid = _choose(logits, req.temperature, req.top_p, rng)
            res = logprob_rows(logits[None, :], np.array([tid]), req.top_logprobs)
            piece = self._pieces[tid]
            special = tid in eng.control
            new = "" if special else decoder.decode(piece)
            top = tuple(
                TopLogprob(self._pieces[a].decode("utf-8", "replace"), float(b), int(a))
                for a, b in zip(res.top_ids[0].tolist(), res.top_logprob[0].tolist(), strict=True)
            )
            flags = {Flag.SPECIAL} if special else set()
            at = len(stops.text)
            token = Token(piece.decode("utf-8", "replace") if special else new, piece,
                          float(res.logprob[0]), tid, at, at + len(new), top, frozenset(flags), float(res.entropy[0]))
            out = stops.push(index, token, new)
            finish = "stop" if tid in eng.eog or stops.stopped_at is not None else None
            if finish is None and (index == req.max_tokens - 1 or pos + 1 >= eng.n_ctx):
                finish = "length"
            if finish and stops.stopped_at is None:
                out += stops.flush()
            for j, (i, tok, txt) in enumerate(out):
                last = finish is not None and j == len(out) - 1
                yield TokenEvent(index=i, token=tok, text=txt, finish_reason=finish if last else None,
                                 prompt_tokens=len(p_ids) if last else None)
            if finish:
                if not out:
                    yield TokenEvent(index=index, token=None, text="", finish_reason=finish, prompt_tokens=len(p_ids))
                return
            logits = await self._call(eng.step, tid, pos)
            pos += 1

    def _generation(self, req: GenerationRequest, events: list[TokenEvent], n_prompt: int) -> Generation:
        """Assemble the output segment: content tokens aligned on the text, control tokens (end of turn)
        kept in place with an empty span and the ``special`` flag."""
        control = self._engine.control
        streamed = [ev.token for ev in events if ev.token is not None]
        content = [t for t in streamed if t.token_id not in control]
        ids = np.array([t.token_id for t in content], dtype=np.int32)
        text = b"".join(t.bytes for t in content).decode("utf-8", "replace")
        k = len(content[0].top) if content else 0  # (an answer that is only its end of turn has no content token)
        res = JobResult(
            np.array([t.logprob for t in content], np.float32), np.array([t.entropy for t in content], np.float32),
            np.array([[a.token_id for a in t.top] for t in content], np.int32).reshape(len(content), k),
            np.array([[a.logprob for a in t.top] for t in content], np.float32).reshape(len(content), k),
        )
        seg = self._segment(text, Side.OUTPUT, ids, res, 0, special=None)
        cols = TokenArrays.of(seg)  # the content tokens' columns, as _segment attached them
        aligned = iter(seg.tokens)
        tokens, ctl, at = [], [], []  # the control tokens, and where each goes among the content tokens
        for t in streamed:
            if t.token_id in control:
                end = tokens[-1].end if tokens else 0
                at.append(len(tokens) - len(ctl))
                ctl.append(Token(t.text, t.bytes, t.logprob, t.token_id, end, end, t.top, frozenset({Flag.SPECIAL}),
                                 t.entropy))
                tokens.append(ctl[-1])
            else:
                tokens.append(next(aligned))
        seg.tokens = tokens
        _with_control(cols, at, ctl, self._keys).attach(seg)
        # the answer is what the stream released: at a stop string, the tokens that spelled it were never released
        # and a token that straddled it was cut there
        cut = len("".join(ev.text for ev in events)) if any(req.stop) else len(text)
        if cut < len(text):  # the stop string and what follows are not part of the answer
            seg.tokens = [t for t in seg.tokens if t.start < cut]
            for t in seg.tokens:
                t.end = min(t.end, cut)
            seg.text = text[:cut]
        return Generation(output=seg, finish_reason=events[-1].finish_reason or "length", prompt_tokens=n_prompt)


def _with_control(cols: TokenArrays, at: list[int], control: list[Token], keys: np.ndarray) -> TokenArrays:
    """The content tokens' columns with the control tokens (end of turn: special, not scored, an empty span at
    the end of the token before) inserted where they came."""
    if not at:
        return cols
    ends = np.concatenate(([0], cols.end))[at]  # the end of the content token before each (0 at the start)
    ent = np.array([math.nan if t.entropy is None else t.entropy for t in control], dtype=np.float64)
    ins = lambda a, v: np.insert(a, at, v)  # noqa: E731
    k = ins(cols.keys, keys[[t.token_id for t in control]])
    return TokenArrays(
        nll=ins(cols.nll, math.nan), start=ins(cols.start, ends), end=ins(cols.end, ends),
        nbytes=ins(cols.nbytes, [len(t.bytes) for t in control]), entropy=ins(cols.entropy, ent),
        n_clamped=cols.n_clamped, n_missing=cols.n_missing, n_special=cols.n_special + len(control),
        n_no_context=cols.n_no_context, keys=k, n_distinct=int(np.unique(k).size))


def _choose(logits: np.ndarray, temperature: float, top_p: float, rng: np.random.Generator) -> int:
    if temperature == 0.0:
        return int(np.argmax(logits))
    z = logits.astype(np.float64) / temperature
    z -= z.max()
    p = np.exp(z)
    p /= p.sum()
    if top_p < 1.0:
        order = np.argsort(-p, kind="stable")
        keep = order[: int(np.searchsorted(np.cumsum(p[order]), top_p)) + 1]
        q = np.zeros_like(p)
        q[keep] = p[keep]
        p = q / q.sum()
    return int(rng.choice(len(p), p=p))
