"""Helpers for the native tests: a schema-driven generator of Avro datums (hypothesis), the
reference canonical form (fastavro, maps sorted), and a Python writer of the spec's blocked form."""

from __future__ import annotations

import io
import json
import random
from functools import cache
from typing import Any

import fastavro
from hypothesis import strategies as st

from auditor.events.codec import schema_path, strip_logical

EVENT_SCHEMA: dict[str, Any] = json.loads(schema_path("privacy_event.avsc").read_text())


RAW_EVENT_SCHEMA = strip_logical(EVENT_SCHEMA)
PARSED_RAW = fastavro.parse_schema(RAW_EVENT_SCHEMA, named_schemas={})

_PRIMITIVES = {
    "null": st.none(),
    "boolean": st.booleans(),
    "int": st.integers(-2**31, 2**31 - 1),
    "long": st.integers(-2**63, 2**63 - 1),
    "float": st.floats(width=32, allow_nan=False),
    "double": st.floats(allow_nan=False),
    "string": st.text(max_size=12),
    "bytes": st.binary(max_size=12),
}


def datums(schema: Any, named: dict[str, Any] | None = None) -> st.SearchStrategy[Any]:
    """Every datum the schema allows (bounded sizes), generated from the schema itself."""
    named = {} if named is None else named
    if isinstance(schema, str):
        return _PRIMITIVES[schema] if schema in _PRIMITIVES else datums(named[schema], named)
    if isinstance(schema, list):
        return st.one_of(*[datums(b, named) for b in schema])
    t = schema["type"]
    if isinstance(t, (dict, list)) or t in _PRIMITIVES:
        return datums(t, named)
    if t == "record":
        named[schema["name"]] = schema
        return st.fixed_dictionaries({f["name"]: datums(f["type"], named) for f in schema["fields"]})
    if t == "enum":
        named[schema["name"]] = schema
        return st.sampled_from(schema["symbols"])
    if t == "fixed":
        named[schema["name"]] = schema
        return st.binary(min_size=schema["size"], max_size=schema["size"])
    if t == "array":
        return st.lists(datums(schema["items"], named), max_size=8)
    if t == "map":
        return st.dictionaries(st.text(max_size=6), datums(schema["values"], named), max_size=7)
    raise ValueError(f"unknown type {t}")


def plain(datum: Any, parsed: Any = PARSED_RAW) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed, datum)
    return buf.getvalue()


def sort_maps(schema: Any, datum: Any, named: dict[str, Any] | None = None) -> Any:
    """The datum with every map's entries in key (UTF-8 byte) order."""
    named = {} if named is None else named
    if isinstance(schema, str):
        return sort_maps(named[schema], datum, named) if schema in named else datum
    if isinstance(schema, list):
        for b in schema:  # the branch fastavro would pick: first whose shape fits
            if _fits(b, datum, named):
                return sort_maps(b, datum, named)
        return datum
    t = schema["type"]
    if isinstance(t, (dict, list)):
        return sort_maps(t, datum, named)
    if t == "record":
        named[schema["name"]] = schema
        return {f["name"]: sort_maps(f["type"], datum[f["name"]], named) for f in schema["fields"]}
    if t in ("enum", "fixed"):
        named[schema["name"]] = schema
    if t == "array":
        return [sort_maps(schema["items"], x, named) for x in datum]
    if t == "map":
        return {k: sort_maps(schema["values"], datum[k], named) for k in sorted(datum, key=str.encode)}
    return datum


def _fits(schema: Any, datum: Any, named: dict[str, Any]) -> bool:
    t = schema if isinstance(schema, str) else schema.get("type")
    if isinstance(t, (dict, list)):
        return _fits(t, datum, named)
    return {"null": datum is None, "record": isinstance(datum, dict), "map": isinstance(datum, dict),
            "array": isinstance(datum, list), "string": isinstance(datum, str),
            "boolean": isinstance(datum, bool)}.get(t, True)


def canonical(datum: Any) -> bytes:
    """The reference canonical encoding of an event datum: fastavro's, with maps sorted."""
    return plain(sort_maps(RAW_EVENT_SCHEMA, datum))


def zigzag(n: int) -> bytes:
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def blocked(schema: Any, datum: Any, rng: random.Random, named: dict[str, Any] | None = None) -> bytes:
    """Another valid encoding of the datum: arrays and maps split into random blocks, some with
    negative counts and byte sizes (the spec's blocked form), map entries shuffled."""
    named = {} if named is None else named
    if isinstance(schema, str):
        if schema in named:
            return blocked(named[schema], datum, rng, named)
        return plain_value(schema, datum)
    if isinstance(schema, list):
        for i, b in enumerate(schema):
            if _fits(b, datum, named):
                return zigzag(i) + blocked(b, datum, rng, named)
        raise ValueError("no branch fits")
    t = schema["type"]
    if isinstance(t, (dict, list)):
        return blocked(t, datum, rng, named)
    if t == "record":
        named[schema["name"]] = schema
        return b"".join(blocked(f["type"], datum[f["name"]], rng, named) for f in schema["fields"])
    if t == "enum":
        named[schema["name"]] = schema
        return zigzag(schema["symbols"].index(datum))
    if t in ("array", "map"):
        if t == "array":
            items = [blocked(schema["items"], x, rng, named) for x in datum]
        else:
            keys = list(datum)
            rng.shuffle(keys)
            items = [plain_value("string", k) + blocked(schema["values"], datum[k], rng, named) for k in keys]
        out = bytearray()
        i = 0
        while i < len(items):
            n = rng.randint(1, len(items) - i)
            chunk = b"".join(items[i:i + n])
            out += zigzag(-n) + zigzag(len(chunk)) if rng.random() < 0.6 else zigzag(n)
            out += chunk
            i += n
        return bytes(out + b"\x00")
    return plain_value(t, datum)


def plain_value(t: str, datum: Any) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(t), datum)
    return buf.getvalue()


def sealed(records: Any, heads: Any = None) -> list[bytes]:
    """The compiled sealer's bytes of ``records``, each after its chain's head in ``heads`` (else genesis)."""
    out, _ = _sealer().seal_batch(records, heads or {})
    return [s.data for s in out]


@cache
def _sealer() -> Any:
    from auditor.native import NativeSealer

    return NativeSealer()
