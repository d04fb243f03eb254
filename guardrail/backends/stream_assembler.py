"""Streamed chat chunks -> normalized token events, one chunk at a time (the streaming side of
:mod:`guardrail.backends.openai_logprobs`).

Keeps the state a stream needs: the tokens so far, an incremental UTF-8 decoder (a character split across
tokens or chunks is emitted whole by the token that completes it), the text so far, and the finish reason.
"""

from __future__ import annotations

import codecs
from typing import Any

from ..types import Flag, Segment, Token
from .base import TokenEvent
from .openai_logprobs import Origin, _get, output_segment, token_from_entry

__all__ = ["StreamAssembler"]


class StreamAssembler:
    """Streamed chunks -> TokenEvents whose ``text`` holds complete characters only.

    A token ending inside a multi-byte character adds no text; the token completing it adds the character.
    The final ``finish_reason`` may be lost (litellm #10686): :meth:`finish` infers it and says so.
    """

    def __init__(self, origin: Origin, max_tokens: int | None = None, *, alternatives: bool = True) -> None:
        """``alternatives=False``: tokens carry their alternatives' entropy, not the alternatives themselves."""
        self.origin = origin
        self._counts: list[int] | None = None if alternatives else []  # alternatives per token, when not kept
        self.max_tokens = max_tokens
        self.tokens: list[Token] = []
        self._pieces: list[str] = []  # the text so far, joined on demand (no quadratic string growth)
        self._len = 0
        self.finish_reason: str | None = None
        self.notes: list[str] = []
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._pending = False  # bytes of an unfinished character are held by the decoder

    def feed(self, chunk: Any) -> list[TokenEvent]:
        """One chunk (dict or litellm object) -> the events it carries (none for role / usage chunks)."""
        events: list[TokenEvent] = []
        for choice in _get(chunk, "choices") or ():
            if (_get(choice, "index") or 0) != 0:
                continue
            lp = _get(choice, "logprobs")
            for entry in (_get(lp, "content") if lp is not None else None) or ():
                events.append(self._token(token_from_entry(entry, self._counts)))
            fr = _get(choice, "finish_reason")
            if fr and self.finish_reason is None:
                self.finish_reason = str(fr)
                if events:
                    events[-1].finish_reason = self.finish_reason
                else:  # some servers send it in a chunk of its own, with no token
                    events.append(TokenEvent(len(self.tokens), None, "", self.finish_reason))
        return events

    @property
    def text(self) -> str:
        """The complete characters streamed so far."""
        if len(self._pieces) > 1:
            self._pieces = ["".join(self._pieces)]
        return self._pieces[0] if self._pieces else ""

    def _token(self, tok: Token) -> TokenEvent:
        start = self._len
        if Flag.SPECIAL in tok.flags:
            new = ""
        elif not self._pending and tok.bytes.isascii():  # the common case: no decoder state to keep
            new = tok.text = tok.bytes.decode("ascii")
        else:
            partial_before = self._pending
            new = self._decoder.decode(tok.bytes)
            self._pending = bool(self._decoder.getstate()[0])
            if partial_before or self._pending:
                tok.flags = tok.flags | {Flag.PARTIAL_UTF8}
            tok.text = new  # the complete characters this token adds ("" while one is unfinished)
        if new:
            self._pieces.append(new)
            self._len += len(new)
        tok.start, tok.end = start, self._len
        self.tokens.append(tok)
        return TokenEvent(len(self.tokens) - 1, tok, new, None)

    def finish(self) -> TokenEvent | None:
        """Close the stream: flush held bytes; a final event only if it adds text or a finish_reason."""
        tail = self._decoder.decode(b"", final=True)
        if tail:
            self._pieces.append(tail)
            self._len += len(tail)
        if self.finish_reason is None:
            last = self.tokens[-1] if self.tokens else None
            if last is not None and Flag.SPECIAL in last.flags:
                self.finish_reason = "stop"
            elif self.max_tokens is not None and len(self.tokens) >= self.max_tokens:
                self.finish_reason = "length"
            else:
                self.finish_reason = "unknown"
            self.notes.append(f"stream ended without a finish_reason; inferred {self.finish_reason!r}")
            return TokenEvent(len(self.tokens), None, tail, self.finish_reason)
        if tail:
            return TokenEvent(len(self.tokens), None, tail, self.finish_reason)
        return None

    def segment(self) -> Segment:
        seg = output_segment(self.tokens, self.origin, counts=self._counts)
        seg.notes.extend(self.notes)
        return seg
