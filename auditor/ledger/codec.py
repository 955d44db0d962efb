"""Subject facts in and out: JSON lines, and Avro messages decoded strictly.

Both forms funnel through :func:`fact_from_mapping`, so a JSON line and an Avro message become
the same :class:`SubjectFact`, and every fault is a :class:`~auditor.errors.DecodeError` that
names the field (and, for files, the file and line). Unknown keys are errors: a misspelt
``efective_at`` must not silently become "no fact". Messages never quote a value that could
identify a person.

Avro messages use the event's framings (single-object ``C3 01`` + fingerprint, or Confluent
``00`` + schema id) with writer schemas allow-listed by fingerprint, a size gate, and the
re-encode check: the body must re-encode to exactly the bytes received, so non-canonical varints,
negative block counts and trailing bytes are rejected, and decoding is bounded by the size gate.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime, timedelta
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

import fastavro

from auditor.errors import DecodeError, SchemaError
from auditor.events.codec import (
    BAD_SUBJECT_ID,
    MAX_SUBJECT_ID,
    refuse_lone_surrogates,
    strip_logical,
    subject_id_edges_clean,
)
from auditor.events.wire import SINGLE_OBJECT_MAGIC, read_body, schema_fingerprint, split_frame, write_body
from auditor.ledger.model import SCOPED_TYPES, FactType, Scope, SubjectFact, to_us

SCHEMA_FILE = "subject_fact.avsc"
DEFAULT_MAX_BYTES = 64 * 1024
#: longest string a fact may carry in any field (ids, names, purposes); the events codec refuses a
#: longer subject id (events.codec.MAX_SUBJECT_ID), for which no fact could be recorded
MAX_STRING = MAX_SUBJECT_ID

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_DATE = date(1970, 1, 1)
_MIN_US = -62_135_596_800_000_000   # 0001-01-01T00:00:00Z
_MAX_US = 253_402_300_799_999_999   # 9999-12-31T23:59:59.999999Z
_MIN_DAYS, _MAX_DAYS = date.min.toordinal() - _EPOCH_DATE.toordinal(), date.max.toordinal() - _EPOCH_DATE.toordinal()

_FIELDS = frozenset({"fact_id", "subject_id", "type", "effective_at", "recorded_at", "source_system",
                     "scope", "birth_date", "service_id"})
_SCOPE_FIELDS = frozenset({"purpose", "recipient_type", "recipient_id"})
_TYPES = {t.value: t for t in FactType}


def _schema_json() -> Any:
    with resources.files("auditor.schemas").joinpath(SCHEMA_FILE).open("rb") as fh:
        return json.load(fh)


@cache
def fact_schema() -> Any:
    """The bundled subject-fact schema, parsed once (with logical types)."""
    return fastavro.parse_schema(_schema_json())


@cache
def raw_fact_schema() -> Any:
    """The same schema without logical types: times and dates stay integers, so an out-of-range
    time is our error to report, not a crash inside the Avro library."""
    return fastavro.parse_schema(strip_logical(_schema_json()))


# ---------------------------------------------------------------- mapping -> SubjectFact

def _bad(message: str, reason: str = "bad_field") -> DecodeError:
    return DecodeError(message, reason=reason)


def _string(m: Mapping[str, Any], key: str, where: str = "", *, required: bool = True) -> str | None:
    value = m.get(key)
    if value is None:
        if required:
            raise _bad(f"missing required field '{where}{key}'", "missing_field")
        return None
    if not isinstance(value, str) or not value:
        raise _bad(f"field '{where}{key}' must be a non-empty string")
    if len(value) > MAX_STRING:
        raise _bad(f"field '{where}{key}' is longer than {MAX_STRING} characters")
    return value


def _subject_id(m: Mapping[str, Any]) -> str:
    """The subject id, refused with reason ``bad_subject_id`` when blanks start or end it: the id is
    the Kafka key that co-partitions facts with events and the input of the subject's pseudonym,
    so ``" u-1"`` would be a subject of its own whose facts never meet ``u-1``'s events. Refusing it
    (and counting it) says so; trimming would guess, and ids may be case- or blank-significant
    elsewhere. The id itself is never quoted."""
    value = str(_string(m, "subject_id"))
    if not subject_id_edges_clean(value):
        raise _bad(BAD_SUBJECT_ID.format("subject_id"), "bad_subject_id")
    return value



def _time(m: Mapping[str, Any], key: str) -> datetime:
    value = m.get(key)
    if value is None:
        raise _bad(f"missing required field '{key}'", "missing_field")
    if isinstance(value, int) and not isinstance(value, bool):
        if not _MIN_US <= value <= _MAX_US:
            raise _bad(f"field '{key}' is outside the years 1 to 9999")
        return _EPOCH + timedelta(microseconds=value)
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
            try:
                return parsed.astimezone(UTC)
            except OverflowError:
                raise _bad(f"field '{key}' is outside the years 1 to 9999") from None
    raise _bad(f"field '{key}' must be an ISO-8601 time (e.g. 2026-03-01T09:00:00Z) or microseconds since epoch")


def _birth_date(value: Any) -> date:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        if not _MIN_DAYS <= value <= _MAX_DAYS:
            raise _bad("field 'birth_date' is outside the years 1 to 9999")
        return _EPOCH_DATE + timedelta(days=value)
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise _bad("field 'birth_date' must be a date, YYYY-MM-DD")


def _scope(value: Any) -> Scope | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise _bad("field 'scope' must be an object with purpose, recipient_type and/or recipient_id")
    unknown = sorted(str(k) for k in value if k not in _SCOPE_FIELDS)
    if unknown:
        raise _bad(f"unknown field 'scope.{unknown[0][:64]}'; scope takes purpose, recipient_type, recipient_id")
    scope = Scope(_string(value, "purpose", "scope.", required=False),
                  _string(value, "recipient_type", "scope.", required=False),
                  _string(value, "recipient_id", "scope.", required=False))
    return None if scope == Scope() else scope


def fact_from_mapping(m: Mapping[str, Any]) -> SubjectFact:
    """Build a SubjectFact from a JSON object or an Avro datum; raise DecodeError on any fault."""
    if not isinstance(m, Mapping):
        raise _bad("a subject fact must be a JSON object")
    unknown = sorted(str(k) for k in m if k not in _FIELDS)
    if unknown:
        raise _bad(f"unknown field '{unknown[0][:64]}'; a subject fact takes {', '.join(sorted(_FIELDS))}")
    raw_type = m.get("type")
    if raw_type is None:
        raise _bad("missing required field 'type'", "missing_field")
    ftype = _TYPES.get(raw_type) if isinstance(raw_type, str) else None
    if ftype is None:
        shown = raw_type[:64] if isinstance(raw_type, str) else type(raw_type).__name__
        raise _bad(f"field 'type' is {shown!r}; expected one of {', '.join(_TYPES)}")
    scope = _scope(m.get("scope"))
    if scope is not None and ftype not in SCOPED_TYPES:
        raise _bad(f"field 'scope' does not apply to a {ftype.value} fact")
    birth = m.get("birth_date")
    if ftype is FactType.BIRTH_DATE:
        if birth is None:
            raise _bad("a BIRTH_DATE fact needs 'birth_date'", "missing_field")
        birth_date: date | None = _birth_date(birth)
    elif birth is not None:
        raise _bad(f"field 'birth_date' does not apply to a {ftype.value} fact")
    else:
        birth_date = None
    service_id = _string(m, "service_id", required=False)
    if ftype in (FactType.SERVICE_STARTED, FactType.SERVICE_ENDED):
        if service_id is None:
            raise _bad(f"a {ftype.value} fact needs 'service_id'", "missing_field")
    elif service_id is not None:
        raise _bad(f"field 'service_id' does not apply to a {ftype.value} fact")
    return SubjectFact(
        fact_id=str(_string(m, "fact_id")),
        subject_id=_subject_id(m),
        type=ftype,
        effective_at=_time(m, "effective_at"),
        recorded_at=_time(m, "recorded_at"),
        source_system=str(_string(m, "source_system")),
        scope=scope,
        birth_date=birth_date,
        service_id=service_id,
    )


# ---------------------------------------------------------------- SubjectFact -> mapping

def fact_to_mapping(f: SubjectFact, *, json_form: bool = False) -> dict[str, Any]:
    """The datum under the raw schema (times in µs, dates in days); ``json_form``: ISO strings."""
    return {
        "fact_id": f.fact_id,
        "subject_id": f.subject_id,
        "type": f.type.value,
        "effective_at": f.effective_at.isoformat() if json_form else to_us(f.effective_at),
        "recorded_at": f.recorded_at.isoformat() if json_form else to_us(f.recorded_at),
        "source_system": f.source_system,
        "scope": None if f.scope is None else f.scope._asdict(),
        "birth_date": None if f.birth_date is None else (
            f.birth_date.isoformat() if json_form else (f.birth_date - _EPOCH_DATE).days),
        "service_id": f.service_id,
    }


def fact_to_json(f: SubjectFact) -> str:
    m = fact_to_mapping(f, json_form=True)
    return json.dumps({k: v for k, v in m.items() if v is not None}, separators=(",", ":"), sort_keys=True)


def encode_fact(f: SubjectFact) -> bytes:
    """The fact's Avro body under the bundled schema (no framing)."""
    return write_body(raw_fact_schema(), fact_to_mapping(f))


def encode_fact_single_object(f: SubjectFact) -> bytes:
    """A Kafka message value: Avro single-object encoding under the bundled schema."""
    return SINGLE_OBJECT_MAGIC + bundled_fingerprint() + encode_fact(f)


@cache
def bundled_fingerprint() -> bytes:
    return schema_fingerprint(fact_schema())


# ---------------------------------------------------------------- JSON lines

class DecodedFact(NamedTuple):
    """One line of a facts file: the fact, or the error that replaced it."""

    source: str
    line: int
    fact: SubjectFact | None
    error: DecodeError | None


def decode_fact_line(text: str | bytes) -> SubjectFact:
    if len(text) > DEFAULT_MAX_BYTES:
        raise _bad(f"line of {len(text)} bytes exceeds the {DEFAULT_MAX_BYTES}-byte limit", "oversize")
    try:
        obj = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DecodeError(f"not valid JSON ({exc.__class__.__name__})", reason="undecodable") from exc
    # a lone surrogate escape (\\ud800) is no Unicode text: no pseudonym, no Avro, no trail can hold it
    refuse_lone_surrogates(text if isinstance(text, str) else text.decode("utf-8", "replace"), obj)
    return fact_from_mapping(obj)


def iter_fact_lines(path: Path) -> Iterator[DecodedFact]:
    """Decode a JSON-lines facts file; blank lines and ``#`` comments are skipped."""
    with Path(path).open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            stripped = raw.strip()
            if not stripped or stripped.startswith(b"#"):
                continue
            try:
                yield DecodedFact(str(path), number, decode_fact_line(stripped), None)
            except DecodeError as exc:
                exc.source, exc.line = str(path), number
                yield DecodedFact(str(path), number, None, exc)


# ---------------------------------------------------------------- Avro messages

class FactDecoder:
    """Turns one Kafka message value into a SubjectFact, or raises DecodeError with a reason.

    ``extra_schema_files`` allow-lists other writer schemas (later revisions of the fact schema);
    ``confluent_ids`` maps Confluent schema ids to allow-listed fingerprints (hex, or "bundled").
    """

    def __init__(self, extra_schema_files: list[Path] | None = None, confluent_ids: Mapping[int, str] | None = None,
                 max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self.reader = raw_fact_schema()
        self.reader_fp = bundled_fingerprint()
        self.by_fp: dict[bytes, Any] = {self.reader_fp: self.reader}
        for path in extra_schema_files or []:
            try:
                parsed = fastavro.parse_schema(strip_logical(json.loads(Path(path).read_text())))
            except (OSError, ValueError) as exc:
                raise SchemaError(f"cannot load allow-listed fact schema {path}: {exc}",
                                  reason="unknown_schema") from exc
            self.by_fp[schema_fingerprint(parsed)] = parsed
        self.by_id: dict[int, bytes] = {}
        for schema_id, fp_hex in (confluent_ids or {}).items():
            fp = self.reader_fp if fp_hex == "bundled" else bytes.fromhex(fp_hex)
            if fp not in self.by_fp:
                raise SchemaError(f"schema id {schema_id} maps to fingerprint {fp_hex}, which is not allow-listed",
                                  reason="unknown_schema")
            self.by_id[int(schema_id)] = fp

    def decode(self, value: bytes | None) -> SubjectFact:
        key, body = split_frame(value, self.max_bytes)
        if isinstance(key, bytes):
            fp = key
        else:
            fp_hit = self.by_id.get(key)
            if fp_hit is None:
                raise SchemaError(f"fact schema id {key} is not configured", reason="unknown_schema")
            fp = fp_hit
        writer = self.by_fp.get(fp)
        if writer is None:
            raise SchemaError(f"fact writer schema fingerprint {fp.hex()} is not allow-listed", reason="unknown_schema")
        datum = read_body(body, writer, None)
        if write_body(writer, datum) != body:
            raise DecodeError("non-canonical or trailing bytes in the Avro body (hostile encoding)",
                              reason="hostile_encoding")
        if writer is not self.reader:
            datum = read_body(body, writer, self.reader)
        return fact_from_mapping(datum)


