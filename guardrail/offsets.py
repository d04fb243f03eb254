"""Map token byte pieces onto character offsets of the text they came from (pure, no I/O).

Every backend gives tokens as byte strings (llama.cpp pieces, OpenAI ``bytes``, vLLM decoded tokens).  Offsets
in reports are Python string indices, so a byte span ``[b0, b1)`` becomes the character span of the characters
its bytes touch: a token holding only part of a multi-byte character (``partial_utf8``) spans that whole
character, as does its neighbour holding the rest.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["Span", "byte_to_char_index", "char_spans"]

Span = tuple[int, int, bool]  # (start, end, partial_utf8)


def byte_to_char_index(text: str) -> tuple[bytes, np.ndarray]:
    """UTF-8 bytes of ``text`` and, for every byte, the index of the character it belongs to."""
    data = text.encode("utf-8")
    if len(data) == len(text):  # ASCII fast path
        return data, np.arange(len(data), dtype=np.int64)
    lens = np.fromiter((len(ch.encode("utf-8")) for ch in text), dtype=np.int64, count=len(text))
    return data, np.repeat(np.arange(len(text), dtype=np.int64), lens)


def char_spans(text: str, pieces: Sequence[bytes], *, offset: int = 0) -> list[Span] | None:
    """Character span of each piece, laid end to end over ``text`` starting at byte ``offset``.

    A piece that starts with one synthetic space the text lacks (SentencePiece-style tokenizers) is
    aligned by skipping that space.  Returns ``None`` when the pieces do not spell the text: the caller
    must then say so instead of reporting wrong offsets.
    """
    data = text.encode("utf-8")
    n = len(data)
    pos = offset
    byte_spans: list[tuple[int, int]] = []
    for piece in pieces:
        if data.startswith(piece, pos):
            b1 = pos + len(piece)
        elif piece[:1] == b" " and data.startswith(piece[1:], pos):
            b1 = pos + len(piece) - 1
        else:
            return None
        byte_spans.append((pos, b1))
        pos = b1
    if pos != n:
        return None
    if n == len(text):  # ASCII: every byte is a character
        return [(b0, b1, False) for b0, b1 in byte_spans]
    owner = byte_to_char_index(text)[1].tolist()
    spans: list[Span] = []
    for b0, b1 in byte_spans:
        if b1 == b0:  # empty piece (e.g. a control token rendered as nothing)
            c = owner[b0] if b0 < n else len(text)
            spans.append((c, c, False))
            continue
        spans.append((owner[b0], owner[b1 - 1] + 1, not (_is_boundary(data, b0) and _is_boundary(data, b1))))
    return spans


def _is_boundary(data: bytes, i: int) -> bool:
    """True when byte index ``i`` starts a character (or is the end of the data)."""
    return i >= len(data) or (data[i] & 0xC0) != 0x80
