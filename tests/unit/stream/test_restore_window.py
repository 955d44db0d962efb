"""The chain restore's window is bounded by what its messages hold: value, key and headers (attops).

librdkafka keeps each message's headers with it (C memory, not seen by tracemalloc), and a header
may be as large as the topic's max.message.bytes: a window weighed by value and key alone kept
2,000 messages of one-byte values and megabyte headers. Measured on a broker (a throwaway
script, 02:42-02:45): restoring past 1,200 such messages of 256 KiB grew the process's peak RSS
by 123 and 133 MiB; 0 and 0 with the headers weighed.
"""

from __future__ import annotations

import tracemalloc
from typing import Any

from confluent_kafka import KafkaError

from auditor.stream import chainrestore


class Msg:
    def __init__(self, offset: int, value: bytes | None, headers: list[tuple[str, bytes]] | None = None,
                 key: bytes | None = None, error: Any = None) -> None:
        self._offset, self._value, self._headers, self._key, self._error = offset, value, headers, key, error

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes | None:
        return self._value

    def key(self) -> bytes | None:
        return self._key

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._headers

    def error(self) -> Any:
        return self._error


class Eof:
    def code(self) -> int:
        return KafkaError._PARTITION_EOF


class Consumer:
    def __init__(self, msgs: list[Msg]) -> None:
        self.msgs, self.at = msgs, 0

    def assign(self, tps: list[Any]) -> None:
        self.at = tps[0].offset

    def unassign(self) -> None:
        pass

    def poll(self, timeout: float) -> Msg:
        if self.at >= len(self.msgs):
            return Msg(self.at, None, error=Eof())
        self.at += 1
        return self.msgs[self.at - 1]

    def get_watermark_offsets(self, tp: Any, timeout: float, cached: bool) -> tuple[int, int]:
        return 0, len(self.msgs)


def _held(window: list[Any]) -> int:
    return sum(len(m.value() or b"") + len(m.key() or b"") + sum(len(v) for _, v in m.headers() or ())
               for m in window)


def test_a_window_of_messages_with_large_headers_keeps_no_more_than_its_bytes():
    big = b"h" * (256 * 1024)
    msgs = [Msg(i, b"x", [("h", big)]) for i in range(200)]  # 50 MiB of headers
    window, cut = chainrestore._window(Consumer(msgs), "t", 0, 0, 200, 1.0, chainrestore.WINDOW_BYTES)
    assert _held(window) <= chainrestore.WINDOW_BYTES, f"{_held(window) / 2**20:.0f} MiB held in one window"
    assert [m.offset() for m in window] == list(range(cut, 200)) and cut > 0


def test_the_scan_back_visits_every_message_once_from_the_end_whatever_the_window_holds():
    big = b"h" * (3 * 1024 * 1024)
    msgs = [Msg(i, b"%d" % i, [("h", big)] if i % 3 == 0 else None, key=big if i % 5 == 0 else None)
            for i in range(100)]
    seen: list[int] = []
    chainrestore._scan_back(Consumer(msgs), "t", 0, lambda m: seen.append(m.offset()), lambda: False, 1.0)
    assert seen == list(range(99, -1, -1))


class LazyConsumer(Consumer):
    """Makes each message's value when it is polled (the only reference is the caller's)."""

    def __init__(self, n: int, size: int) -> None:
        super().__init__([])
        self.n, self.size = n, size

    def poll(self, timeout: float) -> Msg:
        if self.at >= self.n:
            return Msg(self.at, None, error=Eof())
        self.at += 1
        return Msg(self.at - 1, (b"%06d" % self.at) * (self.size // 6))

    def get_watermark_offsets(self, tp: Any, timeout: float, cached: bool) -> tuple[int, int]:
        return 0, self.n

    def close(self) -> None:
        pass


def test_adopting_an_unsigned_chain_reads_forward_without_keeping_a_window(monkeypatch):
    """The upgrade path (read_unsigned_chain) kept windows of 2,000 messages too: 200 foreign messages of
    256 KiB held 50 MiB at once; it now reads one message at a time."""
    monkeypatch.setattr(chainrestore, "Consumer", lambda conf: LazyConsumer(200, 256 * 1024))
    tracemalloc.start()
    try:
        log, offset = chainrestore.read_unsigned_chain({}, "audit", 0, "events/0")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert log.head.size == 0 and offset is None  # no record of the chain among them
    assert peak < 4 * 2**20, f"{peak / 2**20:.1f} MiB traced"
