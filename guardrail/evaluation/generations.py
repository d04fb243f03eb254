"""A store of a model's own generations with their tokens, for stream calibration and evaluation.

Generating is the expensive part of measuring a streaming assessor (15-35 tokens/s for the embedded model on 2
cores), so each generation is kept, keyed by (scorer id, prompt, temperature, seed, max_tokens), with what the
assessor reads of every token (its raw logprob, entropy, bytes, whether special) exactly as the backend gave it
at generation time: replaying a stored generation is the same stream, without re-tokenizing its text.  Loops
(guardrail.loops) are labelled when stored.  One JSON line per generation, appended, with the time it was
written (``ts``); the file is created 0600 in a 0700 directory (it holds prompts and outputs, like the score
cache), and ``guardrail cache purge --older-than DAYS`` purges it with the score cache.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..backends.base import Backend, GenerationRequest, Message
from ..baselines.features import token_keys
from ..cache import default_cache_path
from ..loops import has_loop, loop_onset
from ..types import Flag, Segment, Token

__all__ = ["GenerationStore", "StoredGeneration", "default_store_path", "ordered_prompts", "seed_for"]


def seed_for(prompt: str, salt: int | None = None) -> int:
    """A generation's seed, from its prompt (and a run's salt): the same request, hence the same stored
    generation, every time (scripts/generate_outputs.py uses the unsalted rule)."""
    from ..baselines.splits import group_hash

    return int(group_hash(("seed" if salt is None else f"seed{salt}") + "\x00" + prompt), 16) % 2**31


def ordered_prompts(texts: Sequence[str], salt: str = "stream-test") -> list[str]:
    """Distinct prompts in a fixed pseudo-random order (by a salted hash): ``[:n]`` is a reproducible sample."""
    from ..baselines.splits import group_hash

    return sorted(set(texts), key=lambda t: group_hash(salt + "\x00" + t))


def default_store_path() -> Path:
    return default_cache_path().parent / "generations.jsonl"


@dataclass(frozen=True)
class StoredGeneration:
    prompt: str
    temperature: float
    seed: int
    max_tokens: int
    text: str
    finish_reason: str
    loop: bool
    loop_onset: int | None  # token index where the loop's n-gram first occurred
    tokens: tuple[Token, ...]

    def to_json(self, scorer_id: str) -> dict:
        return {"scorer": scorer_id, "prompt": self.prompt, "temperature": self.temperature, "seed": self.seed,
                "max_tokens": self.max_tokens, "text": self.text, "finish_reason": self.finish_reason,
                "loop": self.loop, "loop_onset": self.loop_onset,
                "tokens": [[t.logprob, t.entropy, t.bytes.hex(), Flag.SPECIAL in t.flags] for t in self.tokens]}

    @classmethod
    def from_json(cls, d: dict) -> StoredGeneration:
        toks = tuple(Token("", bytes.fromhex(h), lp, entropy=ent,
                           flags=frozenset((Flag.SPECIAL,)) if special else frozenset())
                     for lp, ent, h, special in d["tokens"])
        return cls(d["prompt"], float(d["temperature"]), int(d["seed"]), int(d["max_tokens"]), d["text"],
                   d["finish_reason"], bool(d["loop"]), d.get("loop_onset"), toks)


def _record(line: str) -> dict | None:
    """One stored line, or None for a blank or unreadable one (a write cut short: skipped, purged)."""
    if not line.strip():
        return None
    try:
        d = json.loads(line)
    except json.JSONDecodeError:
        return None
    return d if isinstance(d, dict) and {"scorer", "prompt", "temperature", "seed", "max_tokens", "tokens"} <= d.keys() \
        else None


def _key(scorer_id: str, prompt: str, temperature: float, seed: int, max_tokens: int) -> tuple:
    return scorer_id, prompt, float(temperature), int(seed), int(max_tokens)


class GenerationStore:
    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_store_path()
        self._items: dict[tuple, StoredGeneration] = {}
        self._load()

    def _load(self) -> None:
        self._items.clear()
        if self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                d = _record(line)
                if d is not None:
                    self._items[_key(d["scorer"], d["prompt"], d["temperature"], d["seed"], d["max_tokens"])] = \
                        StoredGeneration.from_json(d)

    def __len__(self) -> int:
        return len(self._items)

    def purge(self, older_than_s: float) -> int:
        """Delete the generations written more than ``older_than_s`` seconds ago (records from before
        timestamps count as oldest); the file is rewritten in place (0600), or removed when nothing is left.
        Returns how many were deleted."""
        if not self.path.exists():
            return 0
        cut = time.time() - older_than_s
        keep, n = [], 0
        for line in self.path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            d = _record(line)
            if d is None or float(d.get("ts") or 0.0) < cut:  # a half-written line goes too
                n += 1
            else:
                keep.append(line)
        if not keep:
            self.path.unlink()
        elif n:
            tmp = self.path.with_name(self.path.name + ".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write("\n".join(keep) + "\n")
            tmp.replace(self.path)
        self._load()  # what is left
        return n

    def __iter__(self):
        """Every stored generation (any scorer, any request)."""
        return iter(self._items.values())

    def of_scorer(self, scorer_id: str) -> list[StoredGeneration]:
        """The stored generations of one scorer (any request)."""
        return [g for key, g in self._items.items() if key[0] == scorer_id]

    def get(self, scorer_id: str, prompt: str, temperature: float, seed: int, max_tokens: int) -> StoredGeneration | None:
        return self._items.get(_key(scorer_id, prompt, temperature, seed, max_tokens))

    async def generate(self, backend: Backend, prompt: str, temperature: float, seed: int,
                       max_tokens: int) -> tuple[StoredGeneration, bool]:
        """The stored generation for this request, or a new one (generated, stored); True when new."""
        sid = backend.scorer.id
        hit = self.get(sid, prompt, temperature, seed, max_tokens)
        if hit is not None:
            return hit, False
        gen = await backend.generate(GenerationRequest(
            messages=[Message(role="user", content=prompt)], max_tokens=max_tokens, temperature=temperature,
            seed=seed, top_logprobs=0, logprobs=True))
        g = self._of(gen.output, prompt, temperature, seed, max_tokens, gen.finish_reason)
        self._append(g, sid)
        return g, True

    @staticmethod
    def _of(seg: Segment, prompt: str, temperature: float, seed: int, max_tokens: int, finish: str) -> StoredGeneration:
        keys = token_keys(seg).tolist()
        return StoredGeneration(prompt, float(temperature), int(seed), int(max_tokens), seg.text, finish,
                                has_loop(keys), loop_onset(keys), tuple(seg.tokens))

    def _append(self, g: StoredGeneration, scorer_id: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as f:
            f.write(json.dumps({**g.to_json(scorer_id), "ts": round(time.time(), 3)}, ensure_ascii=False) + "\n")
        self._items[_key(scorer_id, g.prompt, g.temperature, g.seed, g.max_tokens)] = g
