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


def test_sessions_give_way_to_other_work_and_to_each_other(backend):
    """Packed scoring and a generation between two checkpoints, more live sessions than sequences set apart for
    them, a session dropped and used again: every call still reads what fresh scoring reads."""
    sessions = backend.engine.sessions
    cuts = prefixes(ANSWER)[:8]
    others = ["The cat sat on the mat.", "Stocks rose on Tuesday after the report. " * 20]

    async def go():
        out = []
        for i, c in enumerate(cuts):
            keys = [f"k{j}" for j in range(6)]  # six answers at once: more than the four sequences
            out.append([await backend.score_reply(MSGS, c + f" ({k})", session=k) for k in keys])
            if i == 2:
                await backend.score_many(others)
            if i == 4:
                await backend.generate(GenerationRequest(messages=[{"role": "user", "content": "Hi"}],
                                                         max_tokens=8, temperature=0.0))
                assert len(sessions) == 0  # a generation may take the whole context: every session gave way
        fresh = [[await backend.score_reply(MSGS, c + f" ({k})") for k in (f"k{j}" for j in range(6))]
                 for c in cuts]
        for j in range(6):
            await backend.end_session(f"k{j}")
        return out, fresh

    out, fresh = run(go())
    assert len(sessions) == 0
    for row, frow in zip(out, fresh, strict=True):
        for a, b in zip(row, frow, strict=True):
            same(a, b)


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
