"""De-duplicating results by their source coordinates, for consumers of the sink topic.

streamflow delivers at least once: after a crash (not a SIGTERM, which drains) a stage
repeats what it handled since its last commit, so a record can be scored twice. Every
result and dead letter names the input it came from in its headers (``sf-source-topic``,
``sf-source-partition``, ``sf-source-offset``); a consumer that keeps the first result per
source record sees each input once::

    from streamflow.dedupe import Deduplicator

    dedupe = Deduplicator()
    for msg in consumer:                       # any Kafka client
        if dedupe.first_time(msg.headers()):
            handle(msg)

Memory is bounded: per source partition a bitmap of the last ``window`` offsets (12.5 kB
for the default 100,000). A repeat is never further behind the newest result of its
partition than one commit interval of input plus the batches in flight (a few thousand
records), so the window holds them all; anything older than the window counts as seen.
``streamflow consume --dedupe`` uses it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from streamflow.headers import H_SOURCE_OFFSET, H_SOURCE_PARTITION, H_SOURCE_TOPIC

SOURCE_HEADERS = (H_SOURCE_TOPIC, H_SOURCE_PARTITION, H_SOURCE_OFFSET)


class _Window:
    """Which of the offsets ``[base, base + size)`` were seen: a ring of bits."""

    __slots__ = ("base", "bits", "size")

    def __init__(self, first: int, size: int) -> None:
        self.size = size
        self.base = max(0, first - size + 1)  # leaves room behind the first offset for late ones
        self.bits = bytearray((size + 7) // 8)

    def first_time(self, offset: int) -> bool:
        if offset < self.base:
            return False  # older than the window: taken as seen
        if offset >= self.base + self.size:
            self._advance(offset - self.size + 1)
        i = offset % self.size
        byte, bit = i >> 3, 1 << (i & 7)
        if self.bits[byte] & bit:
            return False
        self.bits[byte] |= bit
        return True

    def _advance(self, new_base: int) -> None:
        if new_base - self.base >= self.size:
            self.bits = bytearray(len(self.bits))
        else:
            for o in range(self.base, new_base):  # forget the offsets leaving the window
                i = o % self.size
                self.bits[i >> 3] &= ~(1 << (i & 7)) & 0xFF
        self.base = new_base


class Deduplicator:
    """``first_time(headers)`` is True once per source record, False for its repeats."""

    def __init__(self, window: int = 100_000) -> None:
        if window < 1:
            raise ValueError("window must be >= 1")
        self.window = window
        self._windows: dict[tuple[str, int], _Window] = {}
        self.repeats = 0

    def first_time(self, headers: Iterable[tuple[str, Any]] | Mapping[str, Any] | None) -> bool:
        """False when the message's source record was seen before. A message without source
        headers (not written by streamflow) always counts as new."""
        items = headers.items() if isinstance(headers, Mapping) else (headers or ())
        found: dict[str, Any] = {k: v for k, v in items if k in SOURCE_HEADERS and v is not None}
        if len(found) < 3:
            return True
        topic = found[H_SOURCE_TOPIC]
        source = (
            topic.decode() if isinstance(topic, bytes) else topic,
            int(found[H_SOURCE_PARTITION]),
        )
        offset = int(found[H_SOURCE_OFFSET])
        window = self._windows.get(source)
        if window is None:
            window = self._windows[source] = _Window(offset, self.window)
        if window.first_time(offset):
            return True
        self.repeats += 1
        return False
