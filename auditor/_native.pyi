"""Type stub of the compiled module (native/src/lib.rs). Use auditor.native, not this."""

from typing import Any, Iterable, Mapping, Sequence

class Decoded:
    canonical: bytes
    digest: bytes
    facts: Any

class Refused:
    reason: str
    message: str
    schema_id: int | None

class EventCodec:
    def __init__(self, reader: str, writers: Sequence[tuple[bytes, str]],
                 confluent_ids: dict[int, bytes] | None = ..., max_bytes: int = ...,
                 facts: Sequence[str] | None = ...) -> None: ...
    @property
    def fact_names(self) -> list[str]: ...
    def add_confluent_id(self, schema_id: int, fingerprint: bytes) -> None: ...
    def decode_batch(self, values: Sequence[bytes | None], datum: bool = ...) -> list[Decoded | Refused]: ...

class RecordSealer:
    def __init__(self, schema: str) -> None: ...
    def encode_body(self, record: Any) -> bytes: ...
    def seal_batch(self, records: Iterable[Any], heads: dict[str, tuple[int, bytes]]
                   ) -> list[tuple[bytes, int, bytes, bytes]]: ...

def genesis_hash(chain_id: str) -> bytes: ...

def chain_encoded(records: Sequence[bytes], heads: Mapping[str, Any], ranges: Mapping[str, Any]
                  ) -> tuple[bytes, int, list[tuple[str, int, bytes, int, tuple[bytes, ...], list[bytes]]],
                             int | None]: ...
