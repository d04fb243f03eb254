"""Disk cache of scored segments keyed by (scorer id, side, SHA-256 of the text).

Baseline fitting and evaluation score thousands of texts; a re-run with the same scorer costs nothing.  One
SQLite file (WAL mode, safe for several processes), values are zlib-compressed JSON in a columnar layout --
no pickle.  The text itself is not stored (only its hash): the caller supplies it back on a hit.

Location: ``$GUARDRAIL_CACHE_DIR`` or ``~/.cache/guardrail``; ``ScoreCache(None)`` is a no-op cache.

Privacy at rest: the tokens' texts make every cached text readable again, so the directory is made 0700 and the
database (with its WAL and shared-memory files) 0600; every entry has a timestamp and
:meth:`ScoreCache.purge` (``guardrail cache purge --older-than DAYS``) deletes old ones.  The request path
(Guard, proxy) writes nothing here unless it is given a cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sqlite3
import threading
import time
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path

from .types import Flag, LogprobMode, Segment, Side, Token, TopLogprob

__all__ = ["ScoreCache", "default_cache_path", "segment_from_dict", "segment_to_dict", "text_key"]

_FORMAT = 1
_FLAG_BITS = {f: 1 << i for i, f in enumerate(Flag)}


def _private_dir(d: Path) -> None:
    """Create ``d`` 0700; tighten it to 0700 when it exists with wider permissions and is ours."""
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = d.stat()
    if st.st_mode & 0o077 and st.st_uid == os.getuid():
        d.chmod(0o700)


def default_cache_path() -> Path:
    root = os.environ.get("GUARDRAIL_CACHE_DIR") or Path.home() / ".cache" / "guardrail"
    return Path(root) / "scores.sqlite"


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _reply_text(context: str, reply: str) -> str:
    """The cache key of a reply scored after ``context`` (hashed, never stored)."""
    return f"\x00reply-to\x00{context}\x00\x00{reply}"


def segment_to_dict(seg: Segment) -> dict:
    toks = seg.tokens
    return {
        "v": _FORMAT,
        "side": seg.side.value, "backend": seg.backend, "model": seg.model, "tokenizer": seg.tokenizer,
        "mode": seg.logprob_mode.value, "scorer_id": seg.scorer_id, "entropy_k": seg.entropy_k,
        "n_chunks": seg.n_chunks, "notes": seg.notes,
        "id": [t.token_id for t in toks],
        "b": [t.bytes.hex() for t in toks],
        "t": [t.text for t in toks],
        "lp": [t.logprob for t in toks],
        "se": [[t.start, t.end] for t in toks],
        "f": [sum(_FLAG_BITS[f] for f in t.flags) for t in toks],
        "h": [t.entropy for t in toks],
        "top": [[[a.token, a.logprob, a.token_id] for a in t.top] for t in toks],
    }


def segment_from_dict(d: dict, text: str) -> Segment:
    if d.get("v") != _FORMAT:
        raise ValueError("cache entry of another format")
    tokens = [
        Token(
            text=tt, bytes=bytes.fromhex(b), logprob=lp, token_id=tid, start=se[0], end=se[1],
            top=tuple(TopLogprob(a[0], a[1], a[2]) for a in top),
            flags=frozenset(f for f, bit in _FLAG_BITS.items() if fl & bit), entropy=h,
        )
        for tid, b, tt, lp, se, fl, h, top in zip(
            d["id"], d["b"], d["t"], d["lp"], d["se"], d["f"], d["h"], d["top"], strict=True
        )
    ]
    return Segment(
        text=text, side=Side(d["side"]), tokens=tokens, backend=d["backend"], model=d["model"],
        tokenizer=d["tokenizer"], logprob_mode=LogprobMode(d["mode"]), scorer_id=d["scorer_id"],
        entropy_k=d["entropy_k"], n_chunks=d["n_chunks"], notes=list(d["notes"]),
    )


class ScoreCache:
    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = Path(path) if path is not None else None
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def _conn(self) -> sqlite3.Connection | None:
        if self.path is None:
            return None
        if self._db is None:
            _private_dir(self.path.parent)
            # created 0600 before SQLite opens it (its -wal and -shm files take the database's permissions)
            os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600))
            for p in (self.path, *(self.path.with_name(self.path.name + x) for x in ("-wal", "-shm"))):
                if p.exists() and p.stat().st_mode & 0o077:
                    p.chmod(0o600)
            db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS scores (scorer_id TEXT NOT NULL, side TEXT NOT NULL, "
                "text_sha256 TEXT NOT NULL, payload BLOB NOT NULL, created REAL NOT NULL DEFAULT 0, "
                "PRIMARY KEY (scorer_id, side, text_sha256))"
            )
            cols = {r[1] for r in db.execute("PRAGMA table_info(scores)")}
            if "created" not in cols:  # a cache from before timestamps: its entries count as the oldest
                db.execute("ALTER TABLE scores ADD COLUMN created REAL NOT NULL DEFAULT 0")
            db.commit()
            self._db = db
        return self._db

    def purge(self, older_than_s: float) -> int:
        """Delete the entries written more than ``older_than_s`` seconds ago (entries from before timestamps
        count as the oldest); returns how many went.  The freed pages are given back to the file system."""
        db = self._conn()
        if db is None:
            return 0
        with self._lock:
            n = db.execute("DELETE FROM scores WHERE created < ?", (time.time() - older_than_s,)).rowcount
            db.commit()
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            db.execute("VACUUM")
        return int(n)

    def info(self) -> dict[str, object]:
        db = self._conn()
        if db is None:
            return {"path": None, "entries": 0}
        n, oldest, newest = db.execute("SELECT COUNT(*), MIN(created), MAX(created) FROM scores").fetchone()
        return {"path": str(self.path), "entries": n, "bytes": self.path.stat().st_size,  # type: ignore[union-attr]
                "oldest": oldest, "newest": newest}

    def get_many(self, scorer_id: str, side: Side, texts: Iterable[str]) -> dict[str, Segment]:
        """Cached segments by text (only the hits).  ``scorer_id``: the key they were put under (a backend's
        ``text_cache_key``)."""
        db = self._conn()
        if db is None:
            return {}
        by_key = {text_key(t): t for t in texts}
        out: dict[str, Segment] = {}
        keys = list(by_key)
        with self._lock:
            for a in range(0, len(keys), 500):
                part = keys[a : a + 500]
                q = ",".join("?" * len(part))
                rows = db.execute(
                    f"SELECT text_sha256, payload FROM scores WHERE scorer_id=? AND side=? AND text_sha256 IN ({q})",
                    [scorer_id, side.value, *part],
                ).fetchall()
                for k, payload in rows:
                    try:
                        seg = segment_from_dict(json.loads(zlib.decompress(payload)), by_key[k])
                    except (ValueError, KeyError, TypeError, zlib.error):
                        continue  # unreadable entry: treat as a miss, it will be overwritten
                    out[by_key[k]] = seg
        self.hits += len(out)
        self.misses += len(by_key) - len(out)
        return out

    def get_replies(self, scorer_id: str, pairs: Sequence[tuple[str, str]]) -> dict[int, Segment]:
        """Cached reply segments (side ``output``) by index into ``pairs`` of (context, reply)."""
        keys = [_reply_text(c, r) for c, r in pairs]
        hits = self.get_many(scorer_id, Side.OUTPUT, keys)
        out = {}
        for i, (k, (_, reply)) in enumerate(zip(keys, pairs, strict=True)):
            if k in hits:
                seg = hits[k]
                seg.text = reply
                out[i] = seg
        return out

    def put_replies(self, pairs: Sequence[tuple[str, str]], segments: Sequence[Segment | None], *,
                    key: str | None = None) -> None:
        keyed = []
        for (c, r), seg in zip(pairs, segments, strict=True):
            if seg is not None:
                keyed.append(dataclasses.replace(seg, text=_reply_text(c, r)))
        self.put_many(keyed, key=key)

    def put_many(self, segments: Iterable[Segment], *, key: str | None = None) -> None:
        """Store segments under ``key`` (default: each segment's scorer id)."""
        db = self._conn()
        if db is None:
            return
        now = time.time()
        rows = [
            (key or s.scorer_id, s.side.value, text_key(s.text),
             zlib.compress(json.dumps(segment_to_dict(s), separators=(",", ":")).encode(), 6), now)
            for s in segments
        ]
        with self._lock:
            db.executemany("INSERT OR REPLACE INTO scores (scorer_id, side, text_sha256, payload, created) "
                           "VALUES (?,?,?,?,?)", rows)
            db.commit()

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
