"""How many messages the ledger read-back takes a consume() (attops): as many as SCAN_BYTES allows for the
largest message of its last batch, weighing headers and keys too. librdkafka keeps each message's headers
with it (C memory), up to max.message.bytes each; weighed by value alone, one-byte values with 1 MiB
headers were taken 1,000 a call."""

from __future__ import annotations

from typing import Any

from streamkit import ledger_feed

from auditor.stream import ledgerfeed


class Msg:
    def __init__(self, offset: int, headers: list[tuple[str, bytes]] | None, key: bytes | None = None) -> None:
        self._offset, self._headers, self._key = offset, headers, key

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return b"x"

    def key(self) -> bytes | None:
        return self._key

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._headers

    def error(self) -> Any:
        return None


class Consumer:
    def __init__(self, n: int, headers: int, key: int = 0) -> None:
        self.n, self.headers, self.key, self.at, self.counts = n, headers, key, 0, []

    def assign(self, tps: list[Any]) -> None:
        self.at = tps[0].offset

    def unassign(self) -> None:
        pass

    def consume(self, count: int, timeout: float) -> list[Msg]:
        self.counts.append(count)
        out = [Msg(o, [("h", b"h" * self.headers)] if self.headers else None, b"k" * self.key or None)
               for o in range(self.at, min(self.n, self.at + count))]
        self.at += len(out)
        return out


def test_messages_with_large_headers_or_keys_are_taken_a_few_a_call(tmp_path):
    feed = ledger_feed(tmp_path)
    for headers, key in ((1 << 20, 0), (0, 1 << 20)):
        consumer = Consumer(400, headers, key)
        seen = [m.offset() for m in feed._scan(consumer, "audit", 0, 0, lambda: None, until=399)]  # type: ignore[arg-type]
        assert seen == list(range(400))
        assert max(consumer.counts[1:]) <= ledgerfeed.SCAN_BYTES // (1 << 20), consumer.counts[:5]


def test_small_records_are_taken_a_thousand_a_call(tmp_path):
    feed = ledger_feed(tmp_path)
    consumer = Consumer(3000, 100)
    assert len(list(feed._scan(consumer, "audit", 0, 0, lambda: None, until=2999))) == 3000  # type: ignore[arg-type]
    assert consumer.counts[:3] == [16, 1000, 1000]
