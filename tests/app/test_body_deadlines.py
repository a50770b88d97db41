"""Body reads are cut off by one periodic check per worker (app.middleware.BodyDeadlines)."""

from __future__ import annotations

import asyncio
import time

import pytest
from starlette.types import Message

from app.errors import BodyTimeout
from app.middleware import BODY_CHECKS_PER_TIMEOUT, BodyDeadlines

TIMEOUT_S = 0.2


async def _never() -> Message:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


async def _at_once() -> Message:
    return {"type": "http.request", "body": b"x", "more_body": False}


def test_a_stalled_read_is_cut_off_after_the_timeout_and_others_are_not() -> None:
    async def main() -> tuple[float, list[Message]]:
        deadlines = BodyDeadlines(TIMEOUT_S)
        started = time.perf_counter()
        stalled = asyncio.ensure_future(deadlines.receive(_never))
        quick = [await deadlines.receive(_at_once) for _ in range(3)]
        with pytest.raises(BodyTimeout, match=r"stalled for over 0\.2 s"):
            await asyncio.wait_for(stalled, TIMEOUT_S * 5)  # a TimeoutError: never cut off
        return time.perf_counter() - started, quick

    elapsed, quick = asyncio.run(main())
    assert all(m == {"type": "http.request", "body": b"x", "more_body": False} for m in quick)
    assert TIMEOUT_S <= elapsed < TIMEOUT_S * (1 + 2 / BODY_CHECKS_PER_TIMEOUT) + 0.1


def test_a_read_cancelled_by_someone_else_stays_cancelled() -> None:
    async def main() -> None:
        deadlines = BodyDeadlines(TIMEOUT_S)
        read = asyncio.ensure_future(deadlines.receive(_never))
        await asyncio.sleep(0)
        read.cancel()
        with pytest.raises(asyncio.CancelledError):
            await read
        assert not deadlines._waiting  # nothing left to check

    asyncio.run(main())


def test_each_event_loop_starts_afresh() -> None:
    deadlines = BodyDeadlines(TIMEOUT_S)
    for _ in range(2):  # a timer armed on the first loop must not keep the second from checking

        async def main() -> None:
            with pytest.raises(BodyTimeout):  # not a TimeoutError: the check did run
                await asyncio.wait_for(deadlines.receive(_never), TIMEOUT_S * 5)

        asyncio.run(main())
