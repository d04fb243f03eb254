"""ModelGate: fair, bounded, cancel-safe admission to one model (no model needed here; the real-model tests
are in test_embedded_concurrency.py)."""

import asyncio
import random
import threading
import time

import pytest

from guardrail.backends.gate import ModelGate
from guardrail.errors import BackendBusyError, ConfigError


async def _wait_queued(gate: ModelGate, n: int) -> None:
    for _ in range(1000):
        if gate.waiting >= n:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{gate.waiting} waiting, expected {n}")


def test_grants_in_arrival_order():
    async def main():
        gate, order = ModelGate(), []

        async def user(i):
            async with gate.hold():
                order.append(i)
                await asyncio.sleep(0.001)

        await gate.acquire()
        tasks = []
        for i in range(6):
            tasks.append(asyncio.create_task(user(i)))
            await _wait_queued(gate, i + 1)
        gate.release()
        await asyncio.gather(*tasks)
        assert order == list(range(6)) and not gate.held and gate.waiting == 0

    asyncio.run(main())


def test_cancelled_waiters_never_keep_the_model():
    async def main():
        gate = ModelGate()
        await gate.acquire()
        a = asyncio.create_task(gate.acquire())
        b = asyncio.create_task(gate.acquire())
        await _wait_queued(gate, 2)
        a.cancel()  # cancelled while queued: skipped
        await asyncio.sleep(0)
        gate.release()
        await asyncio.wait_for(b, 1)
        assert gate.held
        # granted and cancelled in the same turn: the grant is handed on, not lost
        c = asyncio.create_task(gate.acquire())
        d = asyncio.create_task(gate.acquire())
        await _wait_queued(gate, 2)
        gate.release()  # schedules the grant to c ...
        c.cancel()  # ... which is cancelled before it runs
        await asyncio.wait_for(d, 1)
        with pytest.raises(asyncio.CancelledError):
            await c
        assert gate.held and gate.waiting == 0
        gate.release()
        assert not gate.held

    asyncio.run(main())


def test_full_queue_is_a_typed_busy_error_not_a_hang():
    async def main():
        gate = ModelGate(max_waiting=2, name="m")
        await gate.acquire()
        waiters = [asyncio.create_task(gate.acquire()) for _ in range(2)]
        await _wait_queued(gate, 2)
        t0 = time.monotonic()
        with pytest.raises(BackendBusyError, match="2 requests already wait") as e:
            await gate.acquire()
        assert time.monotonic() - t0 < 0.5 and e.value.retry_after > 0
        for _ in waiters:
            gate.release()
            await asyncio.sleep(0)
        await asyncio.gather(*waiters)
        gate.release()
        assert not gate.held

    asyncio.run(main())
    with pytest.raises(ConfigError):
        ModelGate(max_waiting=-1)


def test_blocking_and_async_callers_on_other_threads_and_loops_exclude_each_other():
    gate, inside, overlaps = ModelGate(), [0], []

    def critical():
        inside[0] += 1
        overlaps.append(inside[0])
        time.sleep(0.002)
        inside[0] -= 1

    async def async_user(n):
        for _ in range(n):
            async with gate.hold():
                critical()
            await asyncio.sleep(0)

    def thread_loop():
        asyncio.run(async_user(20))

    def thread_blocking():
        for _ in range(20):
            gate.acquire_blocking()
            try:
                critical()
            finally:
                gate.release()

    threads = [threading.Thread(target=f) for f in (thread_loop, thread_loop, thread_blocking)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(overlaps) == 60 and max(overlaps) == 1 and not gate.held


def test_many_random_cancellations_leave_the_gate_free():
    async def main():
        gate, inside, done = ModelGate(max_waiting=1000), [0], []
        rng = random.Random(7)

        async def user(i):
            async with gate.hold():
                inside[0] += 1
                assert inside[0] == 1
                await asyncio.sleep(rng.random() * 0.002)
                inside[0] -= 1
                done.append(i)

        tasks = [asyncio.create_task(user(i)) for i in range(300)]
        for _ in range(40):
            await asyncio.sleep(0.001)
            for t in rng.sample(tasks, 8):
                t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert not gate.held and gate.waiting == 0 and done
        await asyncio.wait_for(gate.acquire(), 0.1)  # free at once
        gate.release()

    asyncio.run(main())
