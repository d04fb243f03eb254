import pytest

from guardrail.cache import ScoreCache, segment_from_dict, segment_to_dict, text_key
from guardrail.types import Flag, LogprobMode, Segment, Side, Token, TopLogprob


def _seg(text="héllo"):
    toks = [
        Token("h", b"h", None, 1, 0, 1, (), frozenset({Flag.NO_CONTEXT})),
        Token("é", "é".encode()[:1], -3.5, 2, 1, 2, (TopLogprob("x", -0.1, 9),), frozenset({Flag.PARTIAL_UTF8}), 1.25),
        Token("é", "é".encode()[1:], -0.5, 3, 1, 2, (), frozenset({Flag.PARTIAL_UTF8}), 0.5),
        Token("llo", b"llo", -1.0, 4, 2, 5, (), frozenset(), 2.0),
    ]
    return Segment(text, Side.PROMPT, toks, "b", "m", "tok", LogprobMode.RAW, "scorer-1", entropy_k=100, n_chunks=1,
                   notes=["n"])


def test_round_trip_is_exact():
    seg = _seg()
    back = segment_from_dict(segment_to_dict(seg), seg.text)
    assert back == seg


def test_cache_hits_by_scorer_side_and_text(tmp_path):
    c = ScoreCache(tmp_path / "s.sqlite")
    seg = _seg()
    c.put_many([seg])
    assert c.get_many("scorer-1", Side.PROMPT, [seg.text]) == {seg.text: seg}
    assert c.get_many("scorer-2", Side.PROMPT, [seg.text]) == {}
    assert c.get_many("scorer-1", Side.OUTPUT, [seg.text]) == {}
    assert c.get_many("scorer-1", Side.PROMPT, ["other"]) == {}
    assert (c.hits, c.misses) == (1, 3)
    c.close()
    # persistent across instances
    c2 = ScoreCache(tmp_path / "s.sqlite")
    assert c2.get_many("scorer-1", Side.PROMPT, [seg.text])[seg.text] == seg


def test_corrupt_entry_is_a_miss(tmp_path):
    c = ScoreCache(tmp_path / "s.sqlite")
    seg = _seg()
    c.put_many([seg])
    c._conn().execute("UPDATE scores SET payload = x'00ff'")
    assert c.get_many("scorer-1", Side.PROMPT, [seg.text]) == {}


def test_null_cache_is_noop():
    c = ScoreCache(None)
    c.put_many([_seg()])
    assert c.get_many("scorer-1", Side.PROMPT, ["héllo"]) == {}


def test_unknown_format_rejected():
    d = segment_to_dict(_seg())
    d["v"] = 99
    with pytest.raises(ValueError):
        segment_from_dict(d, "héllo")


def test_cache_is_private_timestamped_and_purgeable(tmp_path):
    import os
    import sqlite3
    import stat
    import time

    from typer.testing import CliRunner

    from guardrail.cli import app as cli

    d = tmp_path / "c"
    d.mkdir(mode=0o755)
    d.chmod(0o755)
    path = d / "scores.sqlite"
    c = ScoreCache(path)
    c.put_many([_seg("old text"), _seg("new text")])
    assert stat.S_IMODE(d.stat().st_mode) == 0o700  # tightened
    for p in d.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) & 0o077 == 0, p  # the database, its WAL and shm: 0600
    db = sqlite3.connect(path)
    db.execute("UPDATE scores SET created = ? WHERE text_sha256 = ?", (time.time() - 10 * 86400, text_key("old text")))
    db.commit()
    db.close()
    assert c.info()["entries"] == 2
    assert c.purge(5 * 86400) == 1
    assert set(c.get_many(_seg("x").scorer_id, Side.PROMPT, ["old text", "new text"])) == {"new text"}
    c.close()
    r = CliRunner().invoke(cli, ["cache", "purge", "--older-than", "0", "--path", str(path)])
    assert r.exit_code == 0 and "purged 1 entries" in r.output
    r = CliRunner().invoke(cli, ["cache", "info", "--path", str(path)])
    assert '"entries": 0' in r.output
    assert CliRunner().invoke(cli, ["cache", "purge", "--older-than", "-1", "--path", str(path)]).exit_code == 2
    assert os.stat(path).st_size > 0


def test_a_cache_from_before_timestamps_is_migrated(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE scores (scorer_id TEXT NOT NULL, side TEXT NOT NULL, text_sha256 TEXT NOT NULL, "
               "payload BLOB NOT NULL, PRIMARY KEY (scorer_id, side, text_sha256))")
    db.commit()
    db.close()
    c = ScoreCache(path)
    c.put_many([_seg("a text")])
    assert c.info()["entries"] == 1 and c.purge(3600) == 0
    c.close()


def test_a_backend_that_hands_text_to_a_separate_scorer_caches_under_that_scorers_id(tmp_path):
    """LiteLLMBackend(scorer=X): the segments carry X's id, so the cache must read under X's id too (it read
    under litellm's and wrote under X's: every re-run was a full miss)."""
    import asyncio
    import dataclasses

    from guardrail.backends.base import ScorerInfo
    from guardrail.backends.litellm import LiteLLMBackend
    from guardrail.backends.scripted import ScriptedBackend
    from guardrail.batch import score_texts

    sid = ScorerInfo(backend="scripted", model="m", weights="w", tokenizer="tok", logprob_mode=LogprobMode.RAW)
    seg = dataclasses.replace(_seg(), scorer_id=sid.id)
    inner = ScriptedBackend([seg], scorer=sid)
    backend = LiteLLMBackend("openai/some-model", scorer=inner)
    assert backend.text_scorer.id == sid.id != backend.scorer.id
    cache = ScoreCache(tmp_path / "s.sqlite")
    first = asyncio.run(score_texts(backend, [seg.text], side=Side.PROMPT, cache=cache))
    again = asyncio.run(score_texts(backend, [seg.text], side=Side.PROMPT, cache=cache))
    assert first == again == [seg]
    assert inner.remaining == 0 and len(inner.calls) == 1  # the second run came from the cache
    assert (cache.hits, cache.misses) == (1, 1)


def test_the_generation_store_is_timestamped_and_purged_with_the_cache(tmp_path):
    """Stored generations (prompts and answers at rest) carry the time they were written; `guardrail cache
    purge` deletes the old ones with the score cache's (records from before timestamps count as oldest)."""
    import asyncio
    import json
    import stat
    import time

    from typer.testing import CliRunner

    from guardrail.backends.scripted import ScriptedBackend
    from guardrail.cli import app as cli
    from guardrail.evaluation.generations import GenerationStore
    from guardrail.types import Generation

    store_path = tmp_path / "generations.jsonl"
    seg = _seg("an answer")
    backend = ScriptedBackend([Generation(output=seg, finish_reason="stop", prompt_tokens=3) for _ in range(3)])
    store = GenerationStore(store_path)
    for prompt in ("p1", "p2", "p3"):
        asyncio.run(store.generate(backend, prompt, 0.7, 1, 8))
    assert stat.S_IMODE(store_path.stat().st_mode) == 0o600
    rows = [json.loads(x) for x in store_path.read_text().splitlines()]
    assert all(abs(r["ts"] - time.time()) < 60 for r in rows)
    rows[0]["ts"] = time.time() - 10 * 86400  # written ten days ago
    del rows[1]["ts"]  # from before timestamps
    store_path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"scorer": "cut sh')  # a write cut short
    assert len(GenerationStore(store_path)) == 3  # the broken line is skipped, not a crash
    assert GenerationStore(store_path).purge(5 * 86400) == 3  # the old, the untimestamped and the broken one
    left = GenerationStore(store_path)
    assert len(left) == 1 and next(iter(left)).prompt == "p3"
    assert stat.S_IMODE(store_path.stat().st_mode) == 0o600
    cache = tmp_path / "scores.sqlite"
    ScoreCache(cache).close()
    r = CliRunner().invoke(cli, ["cache", "info", "--path", str(cache)])
    assert json.loads(r.output)["generations"] == {"path": str(store_path), "entries": 1,
                                                   "bytes": store_path.stat().st_size}
    r = CliRunner().invoke(cli, ["cache", "purge", "--older-than", "0", "--path", str(cache)])
    assert r.exit_code == 0 and "purged 1 generations" in r.output and not store_path.exists()
