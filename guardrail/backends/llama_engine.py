"""Synchronous llama.cpp engine for teacher-forced scoring and token-by-token generation.

Why not ``llama_cpp.Llama``: its ``create_completion(echo=True)`` prompt logprobs are wrong in 0.3.x, and its
``eval`` copies every logit row into a Python-side ``n_ctx x n_vocab`` array.  Here we drive the C API
directly: one ``llama_decode`` per batch, logits requested only for the positions whose next token is scored,
the log-softmax computed straight from llama.cpp's logits buffer (no copy), and short texts packed several to
a batch as separate sequences, so one decode call fills the batch whatever the text lengths.

Not thread-safe: the async backend serialises calls with a lock and runs them off the event loop.
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from ..errors import ConfigError, ModelError
from .llama_files import _LOG_TAIL, COMPUTE_TYPES, _llama, _why, check_gguf, compute_copy
from .llama_rows import Job, JobResult, logprob_rows
from .llama_sessions import ReplySessions

log = logging.getLogger("guardrail.llama")

__all__ = ["COMPUTE_TYPES", "Job", "JobResult", "LlamaEngine", "check_gguf", "compute_copy", "logprob_rows"]


class _NoRoomError(ModelError):
    """llama_decode found no free KV cells for the batch (the cache is left as it was)."""


class LlamaEngine:
    """One loaded model + one context.  Positions and sequences are managed here."""

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        n_ctx: int = 2048,
        n_batch: int = 512,
        n_ubatch: int = 512,
        n_threads: int | None = None,
        n_seq_max: int = 32,
        reply_sessions: int = 8,
    ) -> None:
        for name, v in (("n_ctx", n_ctx), ("n_batch", n_batch), ("n_ubatch", n_ubatch)):
            if v < 16:
                raise ConfigError(f"{name} must be >= 16, got {v}")
        if reply_sessions < 0:
            raise ConfigError(f"reply_sessions must be >= 0, got {reply_sessions}")
        L = _llama()  # noqa: N806
        self._L = L
        path = Path(model_path)
        check_gguf(path)
        self.path = path
        L.llama_backend_init()
        mp = L.llama_model_default_params()
        del _LOG_TAIL[:]
        model = L.llama_model_load_from_file(str(path).encode(), mp)
        if not model:
            raise ModelError(f"cannot load model {path}: {_why('llama.cpp could not load it')}")
        self._model = model
        self._vocab = L.llama_model_get_vocab(model)
        self.n_ctx_train = int(L.llama_model_n_ctx_train(model))
        n_ctx = min(n_ctx, self.n_ctx_train) if self.n_ctx_train > 0 else n_ctx
        self.n_batch = min(n_batch, n_ctx)
        self.n_seq_max = n_seq_max
        self.n_threads = n_threads or max(1, os.cpu_count() or 1)
        cp = L.llama_context_default_params()
        cp.n_ctx = n_ctx
        cp.n_batch = self.n_batch
        cp.n_ubatch = min(n_ubatch, self.n_batch)
        cp.n_seq_max = n_seq_max
        cp.kv_unified = True  # packed sequences share one cache of n_ctx cells
        cp.n_threads = self.n_threads
        cp.n_threads_batch = self.n_threads
        cp.no_perf = True
        cp.flash_attn_type = L.LLAMA_FLASH_ATTN_TYPE_ENABLED  # measured ~15% faster than disabled on CPU
        ctx = L.llama_init_from_model(model, cp)
        if not ctx:
            L.llama_model_free(model)
            raise ModelError(f"cannot create a llama.cpp context for {path} (n_ctx={n_ctx})")
        self._ctx = ctx
        self.n_ctx = int(L.llama_n_ctx(ctx))
        self._batch = L.llama_batch_init(self.n_batch, 0, 1)
        self.n_vocab = int(L.llama_vocab_n_tokens(self._vocab))
        self.pieces = [self._piece(i) for i in range(self.n_vocab)]
        self.control = frozenset(
            i for i in range(self.n_vocab) if L.llama_vocab_is_control(self._vocab, i)
        )
        # the last sequences are set apart for reply sessions (llama_sessions: a stream's checkpoints decode only
        # what is new); packed scoring and generation use the others.  None for a model whose cache cannot drop a
        # sequence's tail (recurrent, hybrid) or forgets early positions (sliding-window attention): a session
        # there would read context the cache no longer has
        plain = not (L.llama_model_is_recurrent(model) or L.llama_model_is_hybrid(model) or L.llama_model_n_swa(model))
        n_sessions = min(reply_sessions, n_seq_max - 1) if plain else 0  # one sequence at least for scoring
        self._n_work = n_seq_max - n_sessions
        self.sessions = ReplySessions(self, list(range(n_seq_max - 1, self._n_work - 1, -1)))
        self.bos = int(L.llama_vocab_bos(self._vocab))
        self.eos = int(L.llama_vocab_eos(self._vocab))
        self.eog = frozenset(i for i in self.control if L.llama_vocab_is_eog(self._vocab, i))

    # ---------------------------------------------------------------- metadata & tokens
    def meta(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(1 << 16)
        n = self._L.llama_model_meta_val_str(self._model, key.encode(), buf, len(buf))
        return buf.value.decode("utf-8", errors="replace") if n >= 0 else None

    def _piece(self, tok: int) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = self._L.llama_token_to_piece(self._vocab, tok, buf, 64, 0, True)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self._L.llama_token_to_piece(self._vocab, tok, buf, -n, 0, True)
        return buf.raw[:n]

    def tokenize(self, data: bytes, *, special: bool = False) -> np.ndarray:
        """Token ids of ``data``; ``special`` parses special-token text (only for trusted templates)."""
        n_max = len(data) + 8
        buf = (self._L.llama_token * n_max)()
        n = self._L.llama_tokenize(self._vocab, data, len(data), buf, n_max, False, special)
        if n < 0:
            n_max = -n
            buf = (self._L.llama_token * n_max)()
            n = self._L.llama_tokenize(self._vocab, data, len(data), buf, n_max, False, special)
        return np.frombuffer(buf, dtype=np.int32, count=n).copy()

    # ---------------------------------------------------------------- decoding
    def _clear(self) -> None:
        """Free the cells of every sequence but the sessions'."""
        if not len(self.sessions):
            self._L.llama_memory_clear(self._L.llama_get_memory(self._ctx), True)
            return
        for seq in range(self._n_work):
            self.seq_rm(seq, 0)

    @property
    def is_open(self) -> bool:
        return getattr(self, "_ctx", None) is not None

    def seq_rm(self, seq: int, p0: int) -> bool:
        """Free sequence ``seq``'s cells from position ``p0`` on (False: the cache could not cut it there)."""
        return bool(self._L.llama_memory_seq_rm(self._L.llama_get_memory(self._ctx), seq, p0, -1))

    def session_score(self, key: str, tokens: np.ndarray, score_from: int, top_k: int) -> JobResult:
        """:meth:`score` of one job through the reply session ``key`` (llama_sessions): only what changed since
        the session's last call is decoded (scored afresh where the model has no sequences for sessions)."""
        if not self.sessions.available:
            return self.score([Job(np.asarray(tokens, dtype=np.int32), score_from, top_k)])[0]
        self._clear()
        return self.sessions.score(key, tokens, score_from, top_k)

    def decode_rows(self, rows: Sequence[tuple[int, int, int, bool]], keep: str | None = None) -> np.ndarray:
        """:meth:`_decode`; when the cache has no room, the sessions (all but ``keep``) give way and it is tried
        once more (a failed decode leaves the cache as it was)."""
        try:
            return self._decode(rows)
        except _NoRoomError:
            if not len(self.sessions):
                raise ModelError("llama_decode found no room in the KV cache") from None
            self.sessions.evict(need=0, keep=keep)
            return self._decode(rows)

    def _decode(self, rows: Sequence[tuple[int, int, int, bool]]) -> np.ndarray:
        """Decode ``(token, pos, seq, want_logits)`` rows; return the logits of the wanted rows (a view)."""
        b = self._batch
        n = len(rows)
        tok = np.ctypeslib.as_array(b.token, shape=(self.n_batch,))
        pos = np.ctypeslib.as_array(b.pos, shape=(self.n_batch,))
        nseq = np.ctypeslib.as_array(b.n_seq_id, shape=(self.n_batch,))
        lg = np.ctypeslib.as_array(b.logits, shape=(self.n_batch,))
        arr = np.asarray(rows, dtype=np.int64).reshape(n, 4)
        tok[:n], pos[:n], lg[:n] = arr[:, 0], arr[:, 1], arr[:, 3]
        nseq[:n] = 1
        seq_ids = b.seq_id
        for i, s in enumerate(arr[:, 2].tolist()):
            seq_ids[i][0] = s
        b.n_tokens = n
        rc = self._L.llama_decode(self._ctx, b)
        if rc == 1:
            raise _NoRoomError("llama_decode found no room in the KV cache (code 1)")
        if rc != 0:
            raise ModelError(f"llama_decode failed (code {rc})")
        n_out = int(arr[:, 3].sum())
        if n_out == 0:
            return np.empty((0, self.n_vocab), dtype=np.float32)
        ptr = self._L.llama_get_logits(self._ctx)
        return np.ctypeslib.as_array(ptr, shape=(n_out, self.n_vocab))

    def _pack(self, jobs: Sequence[Job]) -> Iterator[list[int]]:
        """Groups of job indices whose tokens fit one batch (long jobs go alone)."""
        group: list[int] = []
        used = 0
        for i, job in enumerate(jobs):
            n = len(job.tokens)
            if n > self.n_batch:
                if group:
                    yield group
                    group, used = [], 0
                yield [i]
                continue
            if group and (used + n > self.n_batch or len(group) >= self._n_work):
                yield group
                group, used = [], 0
            group.append(i)
            used += n
        if group:
            yield group

    def score(self, jobs: Sequence[Job]) -> list[JobResult]:
        """Teacher-force every job; each job's tokens must fit the context."""
        out: list[JobResult | None] = [None] * len(jobs)
        for job in jobs:
            if len(job.tokens) > self.n_ctx:
                raise ConfigError(f"job of {len(job.tokens)} tokens exceeds the context ({self.n_ctx})")
        for group in self._pack(jobs):
            parts: dict[int, list[JobResult]] = {i: [] for i in group}
            # rows of (token, pos, seq, want) across the group, cut into batch-sized decode calls
            rows: list[tuple[int, int, int, bool]] = []
            owners: list[tuple[int, int]] = []  # (job index, target token index) for each wanted row
            for seq, i in enumerate(group):
                toks = jobs[i].tokens
                n = len(toks)
                for p in range(n):
                    want = jobs[i].score_from <= p + 1 < n
                    rows.append((int(toks[p]), p, seq, want))
                    if want:
                        owners.append((i, p + 1))
            self._clear()
            self.sessions.evict(need=len(rows))  # the sessions give way to the group's tokens
            k = 0
            for a in range(0, len(rows), self.n_batch):
                chunk = rows[a : a + self.n_batch]
                logits = self.decode_rows(chunk)
                m = logits.shape[0]
                own = owners[k : k + m]
                k += m
                if m == 0:
                    continue
                targets = np.fromiter((int(jobs[j].tokens[t]) for j, t in own), np.int64, m)
                top_k = max(jobs[j].top_k for j, _ in own)
                res = logprob_rows(logits, targets, top_k)
                # split the block back per job (rows of one job are contiguous)
                start = 0
                while start < m:
                    j = own[start][0]
                    end = start
                    while end < m and own[end][0] == j:
                        end += 1
                    kj = jobs[j].top_k
                    parts[j].append(JobResult(
                        res.logprob[start:end], res.entropy[start:end],
                        res.top_ids[start:end, :kj], res.top_logprob[start:end, :kj],
                    ))
                    start = end
            self._clear()
            for i in group:
                ps = parts[i]
                kj = jobs[i].top_k
                out[i] = JobResult(
                    np.concatenate([p.logprob for p in ps]) if ps else np.empty(0, np.float32),
                    np.concatenate([p.entropy for p in ps]) if ps else np.empty(0, np.float32),
                    np.concatenate([p.top_ids for p in ps]) if ps else np.empty((0, kj), np.int32),
                    np.concatenate([p.top_logprob for p in ps]) if ps else np.empty((0, kj), np.float32),
                )
        return out  # type: ignore[return-value]

    def start(self, tokens: np.ndarray) -> np.ndarray:
        """Begin a generation: decode the prompt on sequence 0, return the last position's logits (a copy)."""
        if len(tokens) == 0:
            raise ConfigError("cannot generate from an empty prompt")
        if len(tokens) >= self.n_ctx:
            raise ConfigError(f"prompt of {len(tokens)} tokens does not fit the context ({self.n_ctx})")
        self._clear()
        self.sessions.evict()  # a generation may grow to the whole context
        n = len(tokens)
        logits = None
        for a in range(0, n, self.n_batch):
            rows = [(int(tokens[p]), p, 0, p == n - 1) for p in range(a, min(n, a + self.n_batch))]
            logits = self._decode(rows)
        assert logits is not None
        return logits[-1].copy()

    def step(self, token: int, pos: int) -> np.ndarray:
        """Feed one generated token at ``pos``; return the next logits row (a copy)."""
        if pos >= self.n_ctx:
            raise ConfigError(f"generation reached the context size ({self.n_ctx})")
        return self._decode([(token, pos, 0, True)])[0].copy()

    def close(self) -> None:
        L = self._L  # noqa: N806
        if getattr(self, "_batch", None) is not None:
            L.llama_batch_free(self._batch)
            self._batch = None
        if getattr(self, "_ctx", None):
            L.llama_free(self._ctx)
            self._ctx = None
        if getattr(self, "_model", None):
            L.llama_model_free(self._model)
            self._model = None

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass
