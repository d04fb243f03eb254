"""Reply sessions on the real embedded model (guardrail/backends/llama_sessions.py): a growing answer's checkpoints
decode only what changed, and read what a fresh teacher-forcing reads."""

import asyncio

import numpy as np
import pytest

from guardrail.backends.base import GenerationRequest

pytestmark = pytest.mark.slow

MSGS = [{"role": "user", "content": "Tell me about the history of bridges."}]
ANSWER = ("Bridges have a long history. The earliest bridges were simple logs laid across streams, and later people "
          "built stone arches that carried roads over rivers for centuries. The Romans were great bridge builders: "
          "their arches used stone and concrete, and some still stand today. In the nineteenth century, iron and "
          "steel made longer spans possible, and suspension bridges such as the Brooklyn Bridge crossed wide rivers.")
# llama.cpp reads a row's logits with other kernels when fewer rows are decoded at once: measured up to 0.013 nats
TOL = 0.05


def run(coro):
    return asyncio.run(coro)


def prefixes(text: str, every: int = 4) -> list[str]:
    """Growing cuts of ``text``, some in the middle of a word (the last token then changes when it grows)."""
    cuts = sorted({*range(7, len(text), 23), len(text)})
    return [text[:c].rstrip() or text[:c] for c in cuts][::max(1, every // 4)]


def same(a, b) -> None:
    assert [t.text for t in a.tokens] == [t.text for t in b.tokens] and a.text == b.text
    assert [(t.start, t.end) for t in a.tokens] == [(t.start, t.end) for t in b.tokens]
    for f in ("logprob", "entropy"):
        x = np.array([getattr(t, f) for t in a.tokens], float)
        y = np.array([getattr(t, f) for t in b.tokens], float)
        assert np.abs(x - y).max() <= TOL, f
    for t, u in zip(a.tokens, b.tokens, strict=True):  # the alternatives (their order may swap on a near tie)
        assert len(t.top) == len(u.top)
        assert np.allclose(sorted(x.logprob for x in t.top), sorted(x.logprob for x in u.top), atol=TOL)


def test_a_growing_answer_reads_what_fresh_scoring_reads_and_decodes_only_what_is_new(backend):
    sessions = backend.engine.sessions
    cuts = prefixes(ANSWER)
    assert len(cuts) > 15 and any(not c.endswith((" ", ".", ",", ":")) for c in cuts)

    async def go():
        before = sessions.decoded
        got = [await backend.score_reply(MSGS, c, session="grow") for c in cuts]
        decoded = sessions.decoded - before
        fresh = [await backend.score_reply(MSGS, c) for c in cuts]
        assert len(sessions) == 1
        await backend.end_session("grow")
        return got, fresh, decoded

    got, fresh, decoded = run(go())
    for a, b in zip(got, fresh, strict=True):
        same(a, b)
    n_prompt = len(backend._prompt(MSGS)[1])
    # fresh: the prompt and the answer so far at every checkpoint; the session: each token about once, plus the
    # token before each checkpoint's new ones and the re-tokenized ends of cut words
    whole = n_prompt + len(fresh[-1].tokens)
    assert decoded <= whole + 3 * len(cuts)
    assert sum(n_prompt + len(f.tokens) for f in fresh) > 5 * decoded
    assert len(sessions) == 0


def test_sessions_survive_packed_scoring_and_give_way_to_a_generation(backend):
    """Three answers growing side by side, packed scoring of other texts between their checkpoints: each session
    keeps its cells (each token decoded about once) and reads what fresh scoring reads; a generation takes the
    whole context and every session gives way; the next checkpoint decodes everything again, still right."""
    sessions = backend.engine.sessions
    cuts = prefixes(ANSWER)[:8]
    keys = ["a", "b", "c"]
    others = ["The cat sat on the mat.", "Stocks rose on Tuesday after the report. " * 20]
    n_prompt = len(backend._prompt(MSGS)[1])

    async def go():
        out, decoded = [], []
        for c in cuts:
            before = sessions.decoded
            out.append([await backend.score_reply(MSGS, f"({k}) " + c, session=k) for k in keys])
            decoded.append(sessions.decoded - before)
            assert len(sessions) == 3
            await backend.score_many(others)  # packed scoring between checkpoints: the sessions keep their cells
        whole_before = sessions.decoded
        await backend.generate(GenerationRequest(messages=[{"role": "user", "content": "Hi"}], max_tokens=8,
                                                 temperature=0.0))
        assert len(sessions) == 0  # a generation may grow to the whole context: every session gave way
        again = [await backend.score_reply(MSGS, f"({k}) " + cuts[-1], session=k) for k in keys]
        redecoded = sessions.decoded - whole_before
        fresh = [[await backend.score_reply(MSGS, f"({k}) " + c) for k in keys] for c in cuts]
        for k in keys:
            await backend.end_session(k)
        return out, decoded, again, redecoded, fresh

    out, decoded, again, redecoded, fresh = run(go())
    assert len(sessions) == 0
    for row, frow in zip(out, fresh, strict=True):
        for a, b in zip(row, frow, strict=True):
            same(a, b)
    for a, b in zip(again, fresh[-1], strict=True):
        same(a, b)
    whole = [n_prompt + len(f.tokens) for f in fresh[-1]]
    # after the first checkpoint each later one decodes only the new words (and a token or two around the cut)
    assert sum(decoded[1:]) <= sum(whole) - sum(n_prompt + len(f.tokens) for f in fresh[0]) + 9 * len(cuts)
    assert redecoded == sum(whole)  # evicted: everything again, once


def test_a_small_context_evicts_by_need_and_a_full_cache_is_retried():
    """With a 256-token context two growing answers cannot both keep their cells: the older session gives way to
    the newer one's tokens; a decode that finds no room (llama_decode code 1, injected) evicts the sessions and is
    tried again; a call failing midway drops its session (the cache may hold part of it), the next call is right."""
    from guardrail.backends.llama_engine import _NoRoomError
    from guardrail.backends.llamacpp import LlamaCppBackend
    from guardrail.errors import ConfigError, ModelError

    b = LlamaCppBackend(n_ctx=256, n_batch=32, n_ubatch=32, overlap=64)
    eng = b.engine
    try:
        cuts = prefixes(ANSWER)[:10]

        long = ANSWER + " Later, " + ANSWER.lower()
        grow = [long[:k] for k in (200, 400, 600, len(long))]

        async def go():
            for c in grow:
                await b.score_reply(MSGS, c, session="old")
            old_cells = eng.sessions.cells
            assert len(eng.sessions) == 1 and old_cells > 150
            for c in grow:
                last = await b.score_reply(MSGS, "Also: " + c, session="new")
            # both would need more than 256 cells: the old one gave up the tail the new one's tokens needed, and
            # kept its head
            new_cells = len(last.tokens) + len(b._prompt(MSGS)[1])
            assert len(eng.sessions) == 2 and eng.sessions.cells == eng.n_ctx
            assert 0 < eng.sessions.cells - new_cells < old_cells
            # the old answer's next call decodes its lost tail (and makes room again), not the whole answer
            before = eng.sessions.decoded
            same(await b.score_reply(MSGS, grow[-1], session="old"), await b.score_reply(MSGS, grow[-1]))
            assert 0 < eng.sessions.decoded - before < old_cells
            fresh = await b.score_reply(MSGS, "Also: " + long)  # a fresh call: the sessions give way to its tokens
            same(last, fresh)
            assert eng.sessions.cells <= eng.n_ctx - len(fresh.tokens)
            await b.end_session("old")
            await b.end_session("new")
            assert len(eng.sessions) == 0
            await b.score_reply(MSGS, cuts[1], session="kept")
            # no room found once: the sessions are evicted and the decode tried again
            real, calls = eng._decode, []

            def flaky(rows):
                calls.append(len(rows))
                if len(calls) == 1:
                    raise _NoRoomError("injected")
                return real(rows)

            eng._decode = flaky
            try:
                packed = await b.score_many(["The cat sat on the mat."])
            finally:
                eng._decode = real
            assert len(calls) == 2 and len(eng.sessions) == 0
            assert packed[0].tokens[1].logprob == (await b.score_many(["The cat sat on the mat."]))[0].tokens[1].logprob
            # a failure in the middle of a session call: the session is dropped
            await b.score_reply(MSGS, cuts[2], session="mid")
            real_rows, n = eng.decode_rows, []

            def failing(rows, keep=None):
                n.append(1)
                raise ModelError("injected")

            eng.decode_rows = failing
            try:
                with pytest.raises(ModelError):
                    await b.score_reply(MSGS, cuts[5], session="mid")
            finally:
                eng.decode_rows = real_rows
            assert n and len(eng.sessions) == 0
            got = await b.score_reply(MSGS, cuts[6], session="mid")
            same(got, await b.score_reply(MSGS, cuts[6]))
            with pytest.raises(ConfigError):  # a session needs at least one target
                eng.session_score("x", np.arange(5, dtype=np.int32), 5, 0)

        run(go())
    finally:
        b.close()


def test_without_sequences_for_sessions_the_calls_are_scored_afresh():
    from guardrail.backends.llamacpp import LlamaCppBackend

    b = LlamaCppBackend(n_seq_max=1)
    try:
        assert not b.engine.sessions.available

        async def go():
            got = await b.score_reply(MSGS, ANSWER[:80], session="s")
            same(got, await b.score_reply(MSGS, ANSWER[:80]))
            await b.end_session("s")

        run(go())
        assert b.engine.sessions.decoded == 0
    finally:
        b.close()


def test_alternatives_through_a_session():
    """With alternatives asked for (top_k), a session's rows carry them as fresh scoring does."""
    from guardrail.backends.llamacpp import LlamaCppBackend

    b = LlamaCppBackend(top_k=3)
    try:
        cuts = prefixes(ANSWER)[:6]

        async def go():
            got = [await b.score_reply(MSGS, c, session="alt") for c in cuts]
            return got, [await b.score_reply(MSGS, c) for c in cuts]

        got, fresh = run(go())
        for a, f in zip(got, fresh, strict=True):
            same(a, f)
            assert all(len(t.top) == 3 for t in a.tokens)
    finally:
        b.close()


def test_more_streams_than_reply_sessions_and_reply_sessions_sets_how_many(backend):
    """Five answers growing side by side, checkpoints taken in turn: with the default eight sessions every answer
    keeps its session and each checkpoint decodes only what is new; with four, one session gives way at each miss
    -- the one used last, whose answer is called again last -- so some checkpoints decode their answer again, but
    far from all (least recently used eviction would make every checkpoint start over).  The same numbers either
    way."""
    from guardrail.backends.llamacpp import LlamaCppBackend
    from guardrail.errors import ConfigError

    with pytest.raises(ConfigError, match="reply_sessions"):
        LlamaCppBackend(reply_sessions=-1)
    cuts = prefixes(ANSWER)[:6]
    keys = ["a", "b", "c", "d", "e"]

    async def go(be):
        s = be.engine.sessions
        before, last = s.decoded, []
        for c in cuts:
            last = [await be.score_reply(MSGS, f"({k}) " + c, session=k) for k in keys]
        used = s.decoded - before
        for k in keys:
            await be.end_session(k)
        return used, last

    assert backend.engine.sessions.capacity == 8  # the default
    eight, last8 = run(go(backend))
    four_be = LlamaCppBackend(reply_sessions=4)
    try:
        four, last4 = run(go(four_be))
    finally:
        four_be.close()
    n_prompt = len(backend._prompt(MSGS)[1])
    whole = sum(len(r.tokens) for r in last8)  # the finished answers' tokens, decoded about once with 8 sessions
    assert eight < whole + 5 * n_prompt + 5 * 4 * len(cuts)  # each token about once (a cut word re-decoded)
    # every checkpoint starting over would decode each prefix whole
    restart = sum(n_prompt + len(r.tokens) for c in cuts for r in [run(backend.score_reply(MSGS, "(a) " + c))])
    restart *= len(keys)
    assert eight < four < 0.75 * restart
    for a, b in zip(last4, last8, strict=True):
        same(a, b)


def test_an_idle_session_gives_way_first():
    """A session left idle (a stream that ended without closing it) goes before any session in use: with two
    sequences, the idle one gives way to a new answer, and the answer in use keeps its cells."""
    from guardrail.backends.llamacpp import LlamaCppBackend

    b = LlamaCppBackend(reply_sessions=2)
    s = b.engine.sessions
    cuts = prefixes(ANSWER)[:8]
    try:
        async def go():
            await b.score_reply(MSGS, "(idle) " + cuts[0], session="idle")
            for c in cuts[:6]:  # more than 2 x capacity session calls since the idle one's last
                await b.score_reply(MSGS, c, session="a")
            await b.score_reply(MSGS, "(b) " + cuts[0], session="b")  # no sequence free: the idle session goes
            before = s.decoded
            got = await b.score_reply(MSGS, cuts[6], session="a")
            same(got, await b.score_reply(MSGS, cuts[6]))
            grown = len(got.tokens) - len((await b.score_reply(MSGS, cuts[5])).tokens)
            assert s.decoded - before <= grown + 3  # only what is new (a cut word re-read): "a" kept its cells
            before = s.decoded
            await b.score_reply(MSGS, "(idle) " + cuts[1], session="idle")
            assert s.decoded - before > len(b._prompt(MSGS)[1])  # the idle one starts over
        run(go())
    finally:
        b.close()
