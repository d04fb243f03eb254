"""OpenAI / vLLM logprob shapes -> normalized :class:`~guardrail.types.Segment` objects (pure, no I/O).

Inputs are plain JSON-like dicts (a response body, or ``model_dump()`` of a litellm object):

* chat output: ``choices[0].logprobs.content = [{token, logprob, bytes, top_logprobs: [...]}]``, whole or one
  streamed chunk at a time (:class:`~guardrail.backends.stream_assembler.StreamAssembler`);
* vLLM ``prompt_logprobs``: a list aligned with the prompt's token ids, element 0 ``null``, the others dicts
  keyed by token-id strings ``{id: {logprob, rank, decoded_token}}`` with the prompt's own token first;
* legacy completions ``logprobs = {tokens, token_logprobs, text_offset, top_logprobs}`` (``echo`` scoring).

Values go through :func:`~guardrail.types.normalize_logprob` (−9999 → clamped, null/NaN → missing, never 0).
Offsets come from :func:`~guardrail.offsets.char_spans` over the tokens' bytes (the ``bytes`` field where
given).  Tokens that are not text (end-of-turn ``<|im_end|>``, chat-template markers) are flagged
``special``; in a chat prompt everything outside the messages' contents is template and flagged ``special``
(SmolLM2's template injects a default system prompt whose tokens score down to −22).  A response with no
logprobs at all raises :class:`~guardrail.errors.UnscorableError`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import UnscorableError
from ..offsets import char_spans
from ..types import CLAMP_LOGPROB, Flag, LogprobMode, Segment, Side, Token, TopLogprob, normalize_logprob
from .base import ScorerInfo

__all__ = ["Origin", "chat_output_segment", "echo_segment", "output_segment", "prompt_segment", "token_from_entry"]

_TOKEN_ID = re.compile(r"^token_id:(\d+)$")
# Control tokens as servers print them: <|im_end|>, <|eot_id|>, </s>, <s>, <eos>, <end_of_turn> ...
_SPECIAL = re.compile(r"^(<\|[^|\s]{1,40}\|>|</?s>|<eos>|<bos>|<end_of_turn>|<start_of_turn>|<\|endoftext\|>)$")


@dataclass(frozen=True, slots=True)
class Origin:
    """Who produced the numbers: copied into every Segment."""

    backend: str
    model: str
    tokenizer: str
    logprob_mode: LogprobMode
    scorer_id: str

    @classmethod
    def of(cls, scorer: ScorerInfo) -> Origin:
        return cls(scorer.backend, scorer.model, scorer.tokenizer, scorer.logprob_mode, scorer.id)

    def segment(self, text: str, side: Side, tokens: list[Token], k: int | None, notes: list[str]) -> Segment:
        return Segment(
            text=text, side=side, tokens=tokens, backend=self.backend, model=self.model,
            tokenizer=self.tokenizer, logprob_mode=self.logprob_mode, scorer_id=self.scorer_id,
            entropy_k=k, notes=notes,
        )


# ---------------------------------------------------------------------------------------------- tokens
_ABSENT = object()
_NO_FLAGS: frozenset[Flag] = frozenset()
_PARTIAL: frozenset[Flag] = frozenset((Flag.PARTIAL_UTF8,))


def _get(obj: Any, key: str) -> Any:
    """A field of a JSON dict or of a litellm / openai object (no ``model_dump`` on the streaming hot path)."""
    if type(obj) is dict:
        return obj.get(key)
    value = getattr(obj, key, _ABSENT)
    if value is _ABSENT:
        return obj.get(key) if isinstance(obj, Mapping) else None
    return value


def _token_id(token: str) -> int | None:
    m = _TOKEN_ID.match(token)
    return int(m.group(1)) if m else None


_exp = math.exp
_new_top = tuple.__new__  # builds a TopLogprob without the named tuple's Python-level __new__ (hot path)


def _tops(raw: Any, keep: bool = True) -> tuple[tuple[TopLogprob, ...], float | None, int]:
    """``[{token, logprob, bytes}]`` (chat) or ``{token: logprob}`` (legacy) -> the finite alternatives, the
    entropy over them (nats; a top-k lower bound) and how many there are, in one pass.  ``keep=False``: the
    alternatives themselves are not built (a caller that does not hand them on: their entropy is the same)."""
    if not raw:
        return (), None, 0
    if type(raw) is list and type(raw[0]) is dict:  # a JSON body (the proxy's hot path): no intermediate pairs
        items: Any = [(t.get("token") or "", t.get("logprob")) for t in raw]
    elif type(raw) is dict or isinstance(raw, Mapping):
        items = raw.items()
    else:  # litellm / openai objects: plain attribute reads on the streaming hot path
        try:
            items = [(t.token or "", t.logprob) for t in raw]
        except AttributeError:
            items = [(_get(t, "token") or "", _get(t, "logprob")) for t in raw]
    out: list = []  # the finite alternatives: TopLogprob (keep) or (token, logprob) pairs
    h = 0.0
    for tok, lp in items:
        if type(lp) is not float or not CLAMP_LOGPROB < lp <= 0.0:  # the common case skips the general checks
            lp, _ = normalize_logprob(lp)
            if lp is None:
                continue
        if type(tok) is not str:
            tok = str(tok)
        out.append(_new_top(TopLogprob, (tok, lp, _token_id(tok) if tok[:9] == "token_id:" else None)) if keep
                   else (tok, lp))
        h -= _exp(lp) * lp
    if not out:
        return (), None, 0
    if len(out) > 1 and len({a[0] for a in out}) < len(out):
        # the sampled token listed again among its alternatives (some servers do): count each text once
        seen: set[str] = set()
        h = 0.0
        for a in out:
            if a[0] not in seen:
                seen.add(a[0])
                h -= _exp(a[1]) * a[1]
    return (tuple(out) if keep else ()), h, len(out)


def token_from_entry(entry: Any, counts: list[int] | None = None) -> Token:
    """One chat ``logprobs.content`` entry (dict or object) -> a Token without offsets (``start == end == 0``).
    ``counts``: the alternatives are not kept on the token (``top == ()``, their entropy is); how many there
    were is appended here instead (the segment's ``entropy_k``: see :func:`output_segment`'s ``top_k``)."""
    if type(entry) is dict:
        text, raw_bytes, lp, raw_top = (entry.get("token"), entry.get("bytes"), entry.get("logprob"),
                                        entry.get("top_logprobs"))
    else:
        try:  # litellm / openai objects
            text, raw_bytes, lp, raw_top = entry.token, entry.bytes, entry.logprob, entry.top_logprobs
        except AttributeError:
            text, raw_bytes, lp, raw_top = (_get(entry, "token"), _get(entry, "bytes"), _get(entry, "logprob"),
                                            _get(entry, "top_logprobs"))
    if type(text) is not str:
        text = str(text or "")
    tid = _token_id(text) if text[:9] == "token_id:" else None
    if tid is not None:
        data = b""  # ``return_tokens_as_token_ids``: the text is not in the body
    else:
        data = bytes(raw_bytes) if raw_bytes is not None else text.encode("utf-8")
    flags = _NO_FLAGS
    if type(lp) is not float or not CLAMP_LOGPROB < lp <= 0.0:  # the common case skips the general checks
        lp, flag = normalize_logprob(lp)
        if flag is not None:
            flags = frozenset((flag,))
    if text[:1] == "<" and _SPECIAL.match(text):
        flags = flags | {Flag.SPECIAL}
    if counts is None:
        top, entropy, _ = _tops(raw_top)
    else:
        top, entropy, k = _tops(raw_top, keep=False)
        counts.append(k)
    return Token(text, data, lp, tid, 0, 0, top, flags, entropy)


def _top_k(tokens: Sequence[Token]) -> int | None:
    k = max((len(t.top) for t in tokens), default=0)
    return k or None


# ---------------------------------------------------------------------------------------------- output
def output_segment(tokens: list[Token], origin: Origin, content: str | None = None, *, fresh: bool = False,
                   counts: list[int] | None = None) -> Segment:
    """Lay output tokens over their text: special tokens get an empty span at their place.

    ``content`` (the message text the server returned) wins over the tokens' own bytes; when the server cut
    the text at a stop string, tokens past the cut are dropped.  ``fresh``: the tokens were just built for this
    call and nobody else holds them -- their offsets are set in place instead of on copies (the hot path).
    ``counts``: the number of alternatives per token when the tokens were built without them (token_from_entry).
    """
    if not tokens:
        raise UnscorableError("the backend returned no output logprobs")
    notes: list[str] = []
    body = [t for t in tokens if Flag.SPECIAL not in t.flags]
    joined = b"".join(t.bytes for t in body)
    text = joined.decode("utf-8", "replace")
    if content is not None and content != text:
        if text.startswith(content):
            notes.append(f"output cut at character {len(content)} (stop string): later tokens dropped")
        else:
            notes.append("token pieces do not spell the message content: offsets from the tokens' bytes")
            content = None
    spans = char_spans(text, [t.bytes for t in body])
    if spans is None or any(t.token_id is not None and not t.bytes for t in body):
        notes.append("token texts unavailable (token ids only): offsets unavailable")
        spans = [(0, len(text), False)] * len(body)
    it = iter(spans)
    out: list[Token] = []
    last_end = 0
    for t in tokens:
        if not fresh:
            t = Token(t.text, t.bytes, t.logprob, t.token_id, 0, 0, t.top, t.flags, t.entropy)
        if Flag.SPECIAL in t.flags:
            t.start = t.end = last_end
        else:
            s, e, partial = next(it)
            t.text, t.start, t.end = text[s:e], s, e
            if partial:
                t.flags = t.flags | _PARTIAL
            last_end = e
        out.append(t)
    if content is not None and len(content) < len(text):
        out = [t for t in out if t.start < len(content) or (Flag.SPECIAL in t.flags and t.start <= len(content))]
        for t in out:
            t.end = min(t.end, len(content))
        text = content
    return origin.segment(text, Side.OUTPUT, out, _top_k(tokens) if counts is None else max(counts, default=0) or None,
                          notes)


def chat_output_segment(choice: Mapping[str, Any], origin: Origin, *, alternatives: bool = True) -> Segment:
    """``choices[i]`` of a chat response (dict) -> the output segment; no logprobs -> UnscorableError.
    ``alternatives=False``: each token's alternatives are read for their entropy and count only, not kept."""
    lp = choice.get("logprobs") or {}
    entries = lp.get("content") if isinstance(lp, Mapping) else None
    if not entries:
        raise UnscorableError("the backend returned no output logprobs (logprobs.content is empty)")
    content = (choice.get("message") or {}).get("content")
    counts: list[int] | None = None if alternatives else []
    return output_segment([token_from_entry(e, counts) for e in entries], origin, content, fresh=True, counts=counts)


# ---------------------------------------------------------------------------------------------- prompt
def _content_pattern(content: str) -> re.Pattern[str]:
    """Match ``content`` in decoded pieces where a non-ASCII character may appear as U+FFFD run(s)."""
    parts = [re.escape(ch) if ord(ch) < 128 else f"(?:{re.escape(ch)}|\ufffd+)" for ch in content]
    return re.compile("".join(parts))


def _locate(text: str, contents: Sequence[str]) -> list[tuple[int, int]] | None:
    spans, pos = [], 0
    for c in contents:
        if not c:
            continue
        i = text.find(c, pos)
        if i >= 0:
            spans.append((i, i + len(c)))
        else:
            m = _content_pattern(c).search(text, pos)
            if m is None:
                return None
            spans.append(m.span())
        pos = spans[-1][1]
    return spans


def prompt_segment(
    prompt_logprobs: Sequence[Any] | None,
    origin: Origin,
    *,
    contents: Sequence[str] | None = None,
    prompt_token_ids: Sequence[int] | None = None,
    side: Side = Side.PROMPT,
    first_text: str | None = None,
) -> Segment:
    """vLLM ``prompt_logprobs`` -> a segment over the decoded prompt.

    With ``contents`` (the messages' texts, in order) every token outside them is template and flagged
    ``special``; a content that cannot be found in the decoded prompt raises UnscorableError rather than
    scoring the template.  The first token has no prediction (``no_context``); a server body lacks its text,
    which ``first_text`` supplies where the caller knows it (the in-process engine).
    """
    if not prompt_logprobs or all(e is None for e in prompt_logprobs):
        raise UnscorableError("the backend returned no prompt logprobs")
    pieces: list[tuple[str, int | None, Any, tuple[TopLogprob, ...]]] = []
    for i, entry in enumerate(prompt_logprobs):
        want = prompt_token_ids[i] if prompt_token_ids is not None and i < len(prompt_token_ids) else None
        if entry is None:
            pieces.append(((first_text or "") if i == 0 else "", want, None, ()))
            continue
        key = str(want) if want is not None and str(want) in entry else next(iter(entry))
        info = entry[key] or {}
        tops = tuple(
            TopLogprob(str(v.get("decoded_token", "")), lp, int(k))
            for k, v in entry.items()
            if isinstance(v, Mapping) and (lp := normalize_logprob(v.get("logprob"))[0]) is not None
        )
        pieces.append((str(info.get("decoded_token") or ""), int(key), info.get("logprob"), tops))
    text = "".join(p[0] for p in pieces)
    spans = char_spans(text, [p[0].encode("utf-8") for p in pieces])
    assert spans is not None  # the pieces spell the text by construction
    inside = _locate(text, contents) if contents is not None else None
    if contents is not None and inside is None:
        raise UnscorableError("message content not found in the decoded prompt: cannot separate the template")
    tokens: list[Token] = []
    notes: list[str] = []
    for i, ((piece, tid, raw, tops), (s, e, _)) in enumerate(zip(pieces, spans, strict=True)):
        flags: set[Flag] = set()
        if "\ufffd" in piece:
            flags.add(Flag.PARTIAL_UTF8)
        if inside is not None and (e == s or not any(a <= s and e <= b for a, b in inside)):
            flags.add(Flag.SPECIAL)
        if i == 0:
            flags.add(Flag.NO_CONTEXT)
            tokens.append(Token(piece, piece.encode(), None, tid, s, e, (), frozenset(flags)))
            continue
        logprob, flag = normalize_logprob(raw)
        if flag:
            flags.add(flag)
        tokens.append(Token(piece, piece.encode(), logprob, tid, s, e, tops, frozenset(flags), None))
    if inside is not None:
        straddle = sum(1 for t in tokens if any(t.start < b and a < t.end and not (a <= t.start and t.end <= b)
                                                 for a, b in inside))
        if straddle:
            notes.append(f"{straddle} token(s) straddle a message boundary and are flagged special")
    if first_text is None:
        notes.append("first prompt token has no logprob (no_context); its text is not in the response")
    # prompt_logprobs=k holds the prompt token plus up to k alternatives: an entropy bound from so few is
    # meaningless, so none is given.
    return origin.segment(text, side, tokens, None, notes)


# ---------------------------------------------------------------------------------------------- echo
def echo_segment(choice: Mapping[str, Any], prompt: str, origin: Origin, side: Side = Side.TEXT,
                 top_k: int | None = None) -> Segment:
    """Legacy completions ``echo`` logprobs of ``prompt`` -> a segment (generated tokens past it dropped).

    ``top_k``: the ``logprobs`` asked for, recorded as the segment's entropy k.  vLLM lists the prompt token
    besides its k most likely alternatives when it is not among them (k or k + 1 entries), so the largest count
    seen would make k depend on the text -- and a baseline refuses a text whose k differs from its own."""
    lp = choice.get("logprobs") or {}
    toks = lp.get("tokens") if isinstance(lp, Mapping) else None
    if not toks:
        raise UnscorableError("the backend returned no echo logprobs")
    values = lp.get("token_logprobs") or [None] * len(toks)
    tops = lp.get("top_logprobs") or [None] * len(toks)
    offsets = lp.get("text_offset") or []
    n = len(toks)
    if offsets:
        n = sum(1 for o in offsets if o < len(prompt))
    pieces = [str(t).encode("utf-8") for t in toks[:n]]
    spans = char_spans(prompt, pieces)
    notes: list[str] = []
    if spans is None:
        if len(offsets) >= n:
            bounds = [*offsets[:n], len(prompt)]
            spans = [(bounds[i], bounds[i + 1], False) for i in range(n)]
            notes.append("token texts do not spell the prompt: offsets from text_offset")
        else:
            spans = [(0, len(prompt), False)] * n
            notes.append("token texts do not spell the prompt: offsets unavailable")
    tokens: list[Token] = []
    for i in range(n):
        s, e, partial = spans[i]
        flags: set[Flag] = {Flag.PARTIAL_UTF8} if partial or "\ufffd" in toks[i] else set()
        top, entropy, _ = _tops(tops[i])
        if i == 0:
            flags.add(Flag.NO_CONTEXT)
            tokens.append(Token(prompt[s:e], pieces[i], None, _token_id(toks[i]), s, e, (), frozenset(flags)))
            continue
        logprob, flag = normalize_logprob(values[i])
        if flag:
            flags.add(flag)
        tokens.append(Token(prompt[s:e], pieces[i], logprob, _token_id(toks[i]), s, e, top, frozenset(flags),
                            entropy))
    return origin.segment(prompt, side, tokens, top_k or _top_k(tokens), notes)
