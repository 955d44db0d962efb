"""A memo bounded by the bytes it holds, not by its number of entries.

A memo of 100,000 entries is tiny for short ids and 20 GB for 200 KB strings, so every memo of
the daemon counts bytes: an entry larger than ``max_entry`` is never kept, and when keeping one
more would pass ``max_bytes`` the memo is dropped whole (cheaper than LRU bookkeeping on the hot
path; a memo of repeated facts refills within a batch or two). Sizes are the caller's estimate
of what the entry keeps alive (its key and value), in bytes.

Hits go straight to :attr:`BytesMemo.data` (a plain dict lookup); only misses pay for
:meth:`BytesMemo.put`.
"""

from __future__ import annotations

from typing import Generic, Hashable, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

#: what a dict slot, the key and value objects' headers cost beyond their payload, roughly
ENTRY_OVERHEAD = 200


class BytesMemo(Generic[K, V]):
    __slots__ = ("max_bytes", "max_entry", "data", "nbytes")

    def __init__(self, max_bytes: int, max_entry: int) -> None:
        if max_entry > max_bytes:
            raise ValueError("max_entry must not exceed max_bytes")
        self.max_bytes, self.max_entry = max_bytes, max_entry
        self.data: dict[K, V] = {}
        self.nbytes = 0

    def put(self, key: K, value: V, size: int) -> V:
        """Keep ``value`` under ``key`` if it is small enough; return ``value`` either way."""
        size += ENTRY_OVERHEAD
        if size > self.max_entry:
            return value
        if self.nbytes + size > self.max_bytes:
            self.data.clear()
            self.nbytes = 0
        self.data[key] = value
        self.nbytes += size
        return value

    def clear(self) -> None:
        self.data.clear()
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self.data)
