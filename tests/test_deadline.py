"""ChunkDeadline: one timer per stream, deadline per wait, consumer time excluded, outside cancels kept."""

import asyncio

import pytest

from guardrail.backends.deadline import ChunkDeadline


async def _items(delays):
    for i, d in enumerate(delays):
        await asyncio.sleep(d)
        yield i


async def _drain(delays, seconds, consumer_pause=0.0):
    got = []
    with ChunkDeadline(_items(delays).__aiter__(), seconds) as d:
        while True:
            try:
                got.append(await d.next())
            except StopAsyncIteration:
                return got
            await asyncio.sleep(consumer_pause)


def test_items_within_deadline_all_arrive():
    assert asyncio.run(_drain([0.0, 0.01, 0.0, 0.02], 0.2)) == [0, 1, 2, 3]


def test_slow_item_raises_timeout_error():
    with pytest.raises(TimeoutError):
        asyncio.run(_drain([0.0, 0.0, 0.5], 0.05))


def test_many_fast_waits_summing_past_the_deadline_are_fine():
    # 30 waits of 10 ms = 300 ms in all, each well under the 80 ms deadline
    assert len(asyncio.run(_drain([0.01] * 30, 0.08))) == 30


def test_consumer_time_between_items_does_not_count():
    # the consumer sleeps 150 ms after each item; each wait is short: no timeout at 50 ms
    assert asyncio.run(_drain([0.0, 0.0, 0.0], 0.05, consumer_pause=0.15)) == [0, 1, 2]


def test_no_deadline():
    assert asyncio.run(_drain([0.05, 0.05], None)) == [0, 1]


def test_outside_cancellation_is_not_turned_into_a_timeout():
    async def main():
        task = asyncio.create_task(_drain([10.0], 5.0))
        await asyncio.sleep(0.02)
        task.cancel()
        await task

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(main())


def test_timer_is_released_on_close():
    async def main():
        d = ChunkDeadline(_items([0.0]).__aiter__(), 10.0)
        assert d._handle is not None
        d.close()
        assert d._handle is None

    asyncio.run(main())
