"""Batches of events from a faust stream, bounded by record count and by time.

faust's ``Stream.take_events`` counts events; our internal topics carry one columnar
batch per event, so the inference stage needs a bound on *records*. Events are acked
only when the caller asks for the next batch, i.e. after the body of its ``async for``
(which awaits the delivery of everything the batch produced): at-least-once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

from faust.types import EventT, StreamT
from mode.utils.futures import notify


async def take_weighted(
    stream: StreamT, max_weight: int, within: float, weight: Callable[[EventT], int]
) -> AsyncIterator[list[EventT]]:
    """Yield lists of events once their total ``weight`` reaches ``max_weight`` or ``within`` s pass."""
    s: Any = stream
    events: list[EventT] = []
    total = 0
    full = asyncio.Event()
    consumed = asyncio.Event()
    consuming: asyncio.Future[None] | None = None

    async def add(value: Any) -> Any:
        nonlocal consuming, total
        if consuming is not None:
            try:
                await consuming
            finally:
                consuming = None
        event = s.current_event
        events.append(event)
        total += weight(event)
        if total >= max_weight:
            full.set()
            consumed.clear()
            await s.wait(consumed)
        return value

    enable_acks = s.enable_acks
    s.enable_acks = False
    s.add_processor(add)
    s._enable_passive(aiter(s.channel))
    try:
        while not s.should_stop:
            await s.wait_for_stopped(full, timeout=within)
            if events:
                consuming = s.loop.create_future()
                try:
                    yield list(events)
                finally:
                    for event in events:
                        await s.ack(event)
                    events.clear()
                    total = 0
                    notify(consuming)
                    full.clear()
                    consumed.set()
    finally:
        s.enable_acks = enable_acks
        s._processors.remove(add)
