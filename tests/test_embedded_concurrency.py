"""The real embedded model under concurrency: cancellations mid-queue and mid-stream, many at once, a full queue,
a starved default thread pool -- and the model is usable after each."""

import asyncio
import concurrent.futures

import pytest

from guardrail.backends.base import GenerationRequest, Message
from guardrail.errors import BackendBusyError

pytestmark = pytest.mark.slow

TEXTS = ["How do I reset my card PIN?", "The quick brown fox jumps over the lazy dog.",
         "Explain the difference between a list and a tuple in Python.", "Where is my refund?"]


def _req(n=24, seed=1):
    return GenerationRequest(messages=[Message(role="user", content="Write a short poem about the sea.")],
                             max_tokens=n, temperature=0.7, seed=seed, top_logprobs=0)


async def _usable(backend):
    seg = await asyncio.wait_for(backend.score("Is the model still usable?"), 60)
    assert seg.has_logprobs
    for _ in range(200):  # the release is queued behind the worker's last call: free a moment later
        if not backend.gate.held:
            break
        await asyncio.sleep(0.01)
    assert not backend.gate.held and backend.gate.waiting == 0


def test_cancel_mid_queue_and_mid_stream_many_at_once(backend):
    async def main():
        expected = {t: [tok.logprob for tok in (await backend.score(t)).tokens] for t in TEXTS}
        stream = backend.stream(_req(40))
        first = [await anext(stream) for _ in range(3)]  # the stream holds the model
        assert all(ev.token is not None for ev in first) and backend.gate.held
        tasks = [asyncio.create_task(backend.score(TEXTS[i % len(TEXTS)])) for i in range(16)]
        while backend.gate.waiting < 16:
            await asyncio.sleep(0.01)
        for t in tasks[::2]:
            t.cancel()  # cancelled while queued
        await stream.aclose()  # the stream is abandoned mid-generation
        results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 120)
        kept = [(i, r) for i, r in enumerate(results) if i % 2]
        assert all(isinstance(r, asyncio.CancelledError) for r in results[::2])
        for i, seg in kept:
            assert [tok.logprob for tok in seg.tokens] == pytest.approx(expected[TEXTS[i % len(TEXTS)]], abs=0.05)
        # cancel calls while the model is working on them (mid-call), several at once
        running = [asyncio.create_task(backend.score(TEXTS[0] * 20)) for _ in range(4)]
        await asyncio.sleep(0.05)
        for t in running:
            t.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        await _usable(backend)
        # and a stream consumed to its end still works after all that
        events = [ev async for ev in backend.stream(_req(8, seed=3))]
        assert events[-1].finish_reason in ("stop", "length")
        await _usable(backend)

    asyncio.run(main())


def test_waiters_do_not_starve_a_running_stream_of_threads(backend):
    """Before: each waiter sat in the default thread pool (to_thread(lock.acquire)); with a 2-thread pool and a
    few waiters, the stream holding the model could not get a thread for its next step: nothing moved."""
    async def main():
        asyncio.get_running_loop().set_default_executor(concurrent.futures.ThreadPoolExecutor(max_workers=2))
        stream = backend.stream(_req(16))
        await anext(stream)
        waiters = [asyncio.create_task(backend.score(t)) for t in TEXTS * 2]
        while backend.gate.waiting < len(waiters):
            await asyncio.sleep(0.01)
        rest = await asyncio.wait_for(_drain(stream), 120)
        assert rest and rest[-1].finish_reason in ("stop", "length")
        segs = await asyncio.wait_for(asyncio.gather(*waiters), 120)
        assert all(s.has_logprobs for s in segs)
        await _usable(backend)

    asyncio.run(main())


async def _drain(stream):
    return [ev async for ev in stream]


def test_full_queue_answers_busy_at_once(backend):
    async def main():
        old = backend.gate.max_waiting
        backend.gate.max_waiting = 2
        try:
            stream = backend.stream(_req(16))
            await anext(stream)
            queued = [asyncio.create_task(backend.score(t)) for t in TEXTS[:2]]
            while backend.gate.waiting < 2:
                await asyncio.sleep(0.01)
            with pytest.raises(BackendBusyError, match="busy"):
                await asyncio.wait_for(backend.score(TEXTS[2]), 5)
            await stream.aclose()
            assert all(s.has_logprobs for s in await asyncio.wait_for(asyncio.gather(*queued), 120))
        finally:
            backend.gate.max_waiting = old
        await _usable(backend)

    asyncio.run(main())
