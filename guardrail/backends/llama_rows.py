"""Teacher-forcing jobs and the log-softmax of llama.cpp's logit rows (pure numpy): what the engine decodes and
reads back."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Job", "JobResult", "logprob_rows"]


@dataclass(slots=True)
class Job:
    """Teacher-force ``tokens``; score the tokens at indices ``score_from .. len-1``."""

    tokens: np.ndarray  # int32
    score_from: int = 1
    top_k: int = 0


@dataclass(slots=True)
class JobResult:
    logprob: np.ndarray  # float32, one per scored token
    entropy: np.ndarray  # float32, exact entropy of the full predictive distribution (nats)
    top_ids: np.ndarray  # int32 [n, k], most likely first
    top_logprob: np.ndarray  # float32 [n, k]


def logprob_rows(z: np.ndarray, targets: np.ndarray, top_k: int = 0) -> JobResult:
    """Log-softmax of logit rows ``z`` read at ``targets``, exact entropy and top-k.

    Works on blocks of rows with one reused buffer (no per-block allocation), five passes per row:
    max, exp(z - max), sum, sum(e * z), and the gather.  ``H = m + log s - sum(e z) / s``.
    """
    n, v = z.shape
    lp = np.empty(n, dtype=np.float32)
    ent = np.empty(n, dtype=np.float32)
    top_ids = np.empty((n, top_k), dtype=np.int32)
    top_lp = np.empty((n, top_k), dtype=np.float32)
    step = 16
    buf = np.empty((min(step, n), v), dtype=np.float32)
    for a in range(0, n, step):
        b = min(n, a + step)
        blk = z[a:b]
        e = buf[: b - a]
        m = blk.max(axis=1)
        np.subtract(blk, m[:, None], out=e)
        np.exp(e, out=e)
        s = e.sum(axis=1, dtype=np.float64)
        ez = np.einsum("ij,ij->i", e, blk, dtype=np.float64)
        lse = m + np.log(s)
        lp[a:b] = blk[np.arange(b - a), targets[a:b]] - lse
        ent[a:b] = lse - ez / s
        if top_k:
            idx = np.argpartition(blk, -top_k, axis=1)[:, -top_k:]
            vals = np.take_along_axis(blk, idx, axis=1)
            order = np.argsort(-vals, axis=1, kind="stable")
            top_ids[a:b] = np.take_along_axis(idx, order, axis=1)
            top_lp[a:b] = np.take_along_axis(vals, order, axis=1) - lse[:, None]
    return JobResult(lp, ent, top_ids, top_lp)
