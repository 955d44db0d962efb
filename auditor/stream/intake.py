"""How the daemon takes its next batch from the consumer, and how it settles its heap at start.

:func:`take_batch` returns what has arrived, up to ``max_events``, without waiting for more once
there is something to audit: it waits up to ``max_wait_s`` only for the first message. While a
transaction commits (tens of milliseconds, most of it waiting on the broker), librdkafka keeps
fetching, so the time a transaction takes is what gathers the next batch: a few events at a low
rate, full batches on a backlog. ``consume(n, timeout)`` alone waits for the whole timeout
whenever fewer than ``n`` messages are queued, which added ``batch.max_ms`` (100 ms) to the
latency of every event below the daemon's maximum rate.

:func:`settle_heap` freezes what exists once the daemon is built (modules, packs, schemas: ~60,000
objects that a full garbage collection traversed, 50-100 ms a time on this machine) and collects
the young generation less often, so collections do not stall batches (``gc.freeze``).
"""

from __future__ import annotations

import gc
from typing import Any, Protocol


class Consume(Protocol):
    def consume(self, num_messages: int, timeout: float) -> list[Any]: ...


#: allocations between two young collections (CPython's default is 700): a batch of 1,000 events
#: allocates tens of thousands of short-lived objects, most gone before a collection would see them
GC_THRESHOLD = (10_000, 10, 10)


def take_batch(consumer: Consume, max_events: int, max_wait_s: float) -> list[Any]:
    """Up to ``max_events`` messages: what is queued now, else the first to arrive within
    ``max_wait_s`` and what is queued with it; ``[]`` if nothing arrives in that time."""
    msgs = consumer.consume(max_events, 0)
    if msgs or max_wait_s <= 0:
        return msgs
    msgs = consumer.consume(1, max_wait_s)
    if msgs and max_events > 1:
        msgs += consumer.consume(max_events - 1, 0)
    return msgs


def settle_heap() -> None:
    """Collect once, freeze what survives (it lives as long as the process), collect less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)
