"""Stop strings in a generated stream (pure): text is released only once it cannot be the start of a stop
string, so no part of a stop string ever reaches the client, and the stream ends where one completes.

A stop string can span tokens ("\\n\\n" as two "\\n" tokens), and its first characters arrive before anyone can
know it is one.  :class:`StopFilter` holds back the tokens that spell the longest suffix of the text that is a
prefix of a stop string (usually none: text flows as it comes); when a stop string completes, the held tokens
before it are released (a token that straddles it with its text cut at the stop) and the rest -- the stop string
and whatever its last token carried beyond it -- are dropped.  Tokens are released in order with the text they
add; the released texts join to the answer.
"""

from __future__ import annotations

from ..types import Token

__all__ = ["StopFilter"]

Release = tuple[int, Token | None, str]  # (token index, token, text it adds to the answer)


class StopFilter:
    def __init__(self, stops: list[str] | tuple[str, ...]) -> None:
        self.stops = [s for s in stops if s]
        self._longest = max((len(s) for s in self.stops), default=0)
        self.text = ""  # everything generated (the answer is its first ``stopped_at`` characters when stopped)
        self.stopped_at: int | None = None
        self._pending: list[tuple[int, Token | None, int, int]] = []  # index, token, start, end in self.text

    def push(self, index: int, token: Token | None, new: str) -> list[Release]:
        """Add one token (``new``: the text it adds); the tokens that can be released now.  After a stop string
        completes (``stopped_at`` set) the stream is over: nothing more may be pushed."""
        if self.stopped_at is not None:
            raise RuntimeError("the stream already ended at a stop string")
        start = len(self.text)
        self.text += new
        self._pending.append((index, token, start, len(self.text)))
        if not self.stops:
            return self.flush()
        lo = max(0, start - self._longest + 1)
        hits = [i for s in self.stops if (i := self.text.find(s, lo)) >= 0]
        if hits:
            at = self.stopped_at = min(hits)
            out = [(i, t, self.text[a:min(b, at)]) for i, t, a, b in self._pending if a < at]
            self._pending = []
            return out
        hold = max((k for s in self.stops for k in range(min(len(s) - 1, len(self.text)), 0, -1)
                    if self.text.endswith(s[:k])), default=0)
        safe = len(self.text) - hold
        n = 0
        while n < len(self._pending) and self._pending[n][3] <= safe:
            n += 1
        out = [(i, t, self.text[a:b]) for i, t, a, b in self._pending[:n]]
        del self._pending[:n]
        return out

    def flush(self) -> list[Release]:
        """The stream ended otherwise (end of turn, length): release everything held."""
        out = [(i, t, self.text[a:b]) for i, t, a, b in self._pending]
        self._pending = []
        return out
