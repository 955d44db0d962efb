"""Factories for the stream unit tests: a stub message, a processor over the real packs, events, a
ledger feed, a clock the test moves, a sealer fault."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from auditor.events.codec import event_to_mapping
from auditor.events.model import Event
from auditor.events.wire import EventDecoder, SchemaAllowList, encode_single_object
from auditor.policy import CompiledPack, load_pack
from auditor.stream.generate import templates
from auditor.stream.processor import BatchProcessor, Routing
from auditor.trail.keys import Pseudonymizer

if TYPE_CHECKING:
    import pytest

    from auditor.stream.ledgerfeed import LedgerFeed

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
TOPIC = "events"
ROUTING = Routing("audit", "violations", "dead-letter", audit_partitions=3)
PACK_IDS = ("ipasar", "waimaotong", "ipmart", "inper", "thisproduct")


@dataclass(frozen=True)
class StubMessage:
    """What :class:`auditor.stream.processor.MessageLike` asks for, and nothing else."""

    _topic: str
    _partition: int
    _offset: int
    _value: bytes | None
    _key: bytes | None = None
    _headers: tuple[tuple[str, bytes | None], ...] | None = None

    def topic(self) -> str | None:
        return self._topic

    def partition(self) -> int | None:
        return self._partition

    def offset(self) -> int | None:
        return self._offset

    def value(self) -> bytes | None:
        return self._value

    def key(self) -> bytes | None:
        return self._key

    def headers(self) -> list[tuple[str, bytes | None]] | None:
        return None if self._headers is None else list(self._headers)


class Msg:
    """A consumed message as the intake reads it (topic, partition, offset, value, error); slots keep a
    fake backlog of many of them cheap."""

    __slots__ = ("p", "o", "v")

    def __init__(self, p: int, o: int, value: bytes = b"") -> None:
        self.p, self.o, self.v = p, o, value

    def topic(self) -> str:
        return TOPIC

    def partition(self) -> int:
        return self.p

    def offset(self) -> int:
        return self.o

    def value(self) -> bytes:
        return self.v

    def error(self) -> None:
        return None


class Clock:
    """A monotonic clock that moves only when the test moves it (``clock.now += 59``)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@lru_cache(maxsize=1)
def packs() -> dict[str, CompiledPack]:
    return {p.id: p for p in (load_pack(name) for name in PACK_IDS)}


def compliant(pack: str = "ipasar", i: int = 0, event_id: str | None = None) -> Event:
    t = templates(packs()[pack])
    return dataclasses.replace(t.compliant[i % len(t.compliant)], event_id=event_id or f"{pack}-ok-{i}")


def violating(pack: str = "ipasar", i: int = 0, event_id: str | None = None) -> Event:
    t = templates(packs()[pack])
    return dataclasses.replace(t.violating[i % len(t.violating)][1], event_id=event_id or f"{pack}-bad-{i}")


def wire(event: Event) -> bytes:
    return encode_single_object(event_to_mapping(event))


def processor(allow: SchemaAllowList | None = None, routing: Routing = ROUTING) -> BatchProcessor:
    return BatchProcessor(EventDecoder(allow), packs(), Pseudonymizer(b"k" * 32), routing, "unit-1",
                          clock=lambda: NOW)


def native(shadow: bool) -> BatchProcessor:
    """The compiled path's processor on the same packs and key as :func:`processor`; without the
    memo's shadow when ``shadow`` is false."""
    from auditor.native import NativeEventDecoder, NativeSealer

    p = BatchProcessor(NativeEventDecoder(), packs(), Pseudonymizer(b"k" * 32), ROUTING, "unit-1",
                       clock=lambda: NOW, sealer=NativeSealer())
    if not shadow:
        p._shadow_ready = lambda hot: None  # type: ignore[method-assign]
    return p


def messages(values: list[bytes | None], partition: int = 0, first_offset: int = 0,
             topic: str = TOPIC) -> list[StubMessage]:
    return [StubMessage(topic, partition, first_offset + i, v) for i, v in enumerate(values)]


def ledger_feed(tmp_path: Path) -> LedgerFeed:
    """A LedgerFeed (ledger under ``tmp_path``, new keys, the ipasar pack) with no broker."""
    from prometheus_client import CollectorRegistry

    from auditor.config import load_config
    from auditor.stream.app import load_packs
    from auditor.stream.ledgerfeed import LedgerFeed
    from auditor.trail.keys import KeyRing

    KeyRing.generate(tmp_path / "keys")
    keys = KeyRing.resolve(tmp_path / "keys")
    cfg = load_config(None, env={}, overrides={"instance_id": "unit", "ledger.dir": str(tmp_path / "ledger"),
                                               "keys_dir": str(tmp_path / "keys"), "policy.packs": ["ipasar"]})
    processor = BatchProcessor(EventDecoder(SchemaAllowList([], {}, None), 1 << 20), load_packs(cfg.packs),
                               keys.pseudonymizer, Routing("audit", "violations", "dead", 3), "unit")
    return LedgerFeed(cfg, processor, CollectorRegistry())


def seal_fails_for(monkeypatch: pytest.MonkeyPatch, event_id: str) -> None:
    """The Python sealer (hotpath.seal_bytes) raises ValueError("sealer bug") on the record of ``event_id``."""
    from auditor.stream import hotpath

    real = hotpath.seal_bytes

    def seal(head: Any, record: Any) -> Any:
        if record.event_id == event_id:
            raise ValueError("sealer bug")
        return real(head, record)

    monkeypatch.setattr(hotpath, "seal_bytes", seal)
