"""Decoding and encoding of events: JSON lines, Avro container files, mappings.

Every decoder funnels through :func:`event_from_mapping`, so JSON and Avro input
become the same :class:`~auditor.events.model.Event`, and every fault becomes a
:class:`~auditor.errors.DecodeError` naming the field at fault. Schemas are
parsed once, at import.
"""

from __future__ import annotations

import difflib
import io
import json
import re
import sys
import unicodedata
from datetime import UTC, datetime, timedelta
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Mapping

import fastavro

from auditor.errors import DecodeError
from auditor.events.model import (
    Actor,
    ActorOrganisation,
    ActorType,
    ConsentState,
    Event,
    EventKind,
    Identifiability,
    LegalRequest,
    LegalRequestType,
    Recipient,
    Safeguard,
    Subject,
    Transfer,
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: occurred_at as microseconds since the epoch: what a datetime can hold (years 1 to 9999)
MIN_MICROS = (datetime(1, 1, 2, tzinfo=UTC) - _EPOCH) // timedelta(microseconds=1)
MAX_MICROS = (datetime(9999, 12, 30, tzinfo=UTC) - _EPOCH) // timedelta(microseconds=1)
#: a JSON line longer than this is refused unread (the daemon's default message limit is 256 KiB)
MAX_LINE_BYTES = 1024 * 1024


def schema_path(name: str) -> Path:
    """Path of a bundled ``.avsc`` schema (shipped inside the package)."""
    return Path(str(resources.files("auditor.schemas").joinpath(name)))


@cache
def load_schema(name: str) -> Any:
    """Parse a bundled schema once; later calls return the same parsed schema."""
    with schema_path(name).open("rb") as fh:
        return fastavro.parse_schema(json.load(fh))


def event_schema() -> Any:
    return load_schema("privacy_event.avsc")



#: the longest subject id taken: the facts codec's longest string (auditor.ledger.codec.MAX_STRING)
MAX_SUBJECT_ID = 1024
#: Unicode's Default_Ignorable_Code_Point (DerivedCoreProperties.txt) outside Cc/Cf: characters a
#: renderer shows as nothing (combining grapheme joiner, Hangul fillers, Khmer inherent vowels,
#: Mongolian free variation selectors, variation selectors, reserved ignorables)
_IGNORABLE = ((0x034F, 0x034F), (0x115F, 0x1160), (0x17B4, 0x17B5), (0x180B, 0x180F), (0x2065, 0x2065),
              (0x3164, 0x3164), (0xFE00, 0xFE0F), (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8), (0xE0000, 0xE0FFF))


def _invisible(ch: str) -> bool:
    if unicodedata.category(ch) in ("Cc", "Cf"):
        return True
    o = ord(ch)
    return any(lo <= o <= hi for lo, hi in _IGNORABLE)


def subject_id_edges_clean(value: str) -> bool:
    """Whether a subject id starts and ends with a visible character: no blank (space, tab, line
    break), no control or format character (zero-width space, byte-order mark, soft hyphen,
    NUL...) and no other default-ignorable one (variation selector, combining grapheme joiner,
    Hangul filler...) at either end. Such an id shows in no log or console as different from the id
    without it, yet it is another subject: another pseudonym, another ledger key. The events codec
    and the ledger's facts codec refuse it alike (reason ``bad_subject_id``), so an event cannot
    step around a subject's recorded withdrawal by an invisible edge on its id. Nor may it be
    longer than ``MAX_SUBJECT_ID`` characters: the facts codec takes no longer string, so no fact
    could ever be recorded for it."""
    if not value or len(value) > MAX_SUBJECT_ID:
        return False
    first, last = value[0], value[-1]
    if "!" <= first <= "~" and "!" <= last <= "~":  # printable ASCII at both ends: the usual id
        return True
    return value == value.strip() and not (_invisible(first) or _invisible(last))


BAD_SUBJECT_ID = ("field '{}' starts or ends with blanks or invisible characters (spaces, tabs, line breaks, "
                  "zero-width or control characters), or is longer than 1024 characters; the producing system "
                  "must send the id exactly as it names the subject everywhere else")

def strip_logical(node: Any) -> Any:
    """An Avro schema (parsed JSON) without its ``logicalType`` annotations (times stay integers)."""
    if isinstance(node, dict):
        return {k: strip_logical(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [strip_logical(v) for v in node]
    return node


@cache
def raw_event_schema() -> Any:
    """The event schema without logical types: same bytes, but times stay integers (faster)."""
    with schema_path("privacy_event.avsc").open("rb") as fh:
        return fastavro.parse_schema(strip_logical(json.load(fh)))


#: microseconds per unit of each Avro timestamp logical type an allow-listed writer may use
_MICROS_PER = {"timestamp-millis": 1000, "local-timestamp-millis": 1000, "timestamp-micros": 1,
               "local-timestamp-micros": 1}


def plain_writer(parsed: Any) -> tuple[Any, Any]:
    """A parsed writer schema without logical types, and the function that turns its
    ``occurred_at`` into microseconds (a millisecond writer's values times 1000; nanoseconds
    floored). Reading with it never builds a datetime, so a time outside years 1-9999 reaches
    the field check as a number instead of failing inside the Avro reader."""
    field = next((f for f in parsed.get("fields", ()) if f.get("name") == "occurred_at"), None)
    ftype = field.get("type") if field is not None else None
    logical = ftype.get("logicalType") if isinstance(ftype, dict) else None
    if logical in ("timestamp-nanos", "local-timestamp-nanos"):
        def scale(v: Any) -> Any:
            return v // 1000 if isinstance(v, int) else v
    else:
        per = _MICROS_PER.get(logical or "", 1)

        def scale(v: Any) -> Any:
            return v * per if isinstance(v, int) and per != 1 else v
    return fastavro.parse_schema(strip_logical(parsed)), scale


# ---------------------------------------------------------------- mapping -> Event

def _req(m: Mapping[str, Any], key: str, where: str) -> Any:
    value = m.get(key)
    if value is None:
        raise DecodeError(f"missing required field '{where}{key}'", reason="missing_field")
    return value


def _str(m: Mapping[str, Any], key: str, where: str, *, required: bool = True) -> str | None:
    value = _req(m, key, where) if required else m.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or (required and not value):
        raise DecodeError(f"field '{where}{key}' must be a non-empty string", reason="bad_field")
    return value


def _subject_id(subject_m: Mapping[str, Any]) -> str:
    """``subject.id``, refused (``bad_subject_id``) when blanks or invisible characters edge it."""
    value = str(_str(subject_m, "id", "subject."))
    if not subject_id_edges_clean(value):
        raise DecodeError(BAD_SUBJECT_ID.format("subject.id"), reason="bad_subject_id")
    return value


def _bool(m: Mapping[str, Any], key: str, where: str, default: bool | None) -> bool | None:
    value = m.get(key, default)
    if value is not None and not isinstance(value, bool):
        raise DecodeError(f"field '{where}{key}' must be true or false", reason="bad_field")
    return value


def _enum(cls: Any, m: Mapping[str, Any], key: str, where: str, default: Any = None) -> Any:
    value = m.get(key)
    if value is None:
        if default is None:
            raise DecodeError(f"missing required field '{where}{key}'", reason="missing_field")
        return default
    try:
        return cls(value.upper() if isinstance(value, str) else value)
    except ValueError:
        allowed = ", ".join(x.value for x in cls)
        # the value itself is never repeated: it is payload, and this message reaches the trail
        raise DecodeError(f"field '{where}{key}' is not one of {allowed}", reason="bad_field") from None


_OUT_OF_RANGE = "field 'occurred_at' is out of range (years 1 to 9999)"
#: an ISO-8601 year of five or more digits, or a signed one: outside what a datetime holds
_WIDE_YEAR = re.compile(r"\s*[+-]|\s*\d{5,}")


def _in_range(value: datetime) -> datetime:
    """``value`` (naive means UTC) when its instant lies within MIN_MICROS..MAX_MICROS, else a
    DecodeError: a time near the ends of the datetime range with an offset would overflow when
    converted to UTC, in the trail's encoding or any reader's."""
    value = value if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        micros = (value - _EPOCH) // timedelta(microseconds=1)
    except OverflowError:
        raise DecodeError(_OUT_OF_RANGE, reason="bad_field") from None
    if not MIN_MICROS <= micros <= MAX_MICROS:
        raise DecodeError(_OUT_OF_RANGE, reason="bad_field")
    return value


def _time(value: Any) -> datetime:
    if isinstance(value, datetime):
        return _in_range(value)
    if isinstance(value, int) and not isinstance(value, bool):
        if not MIN_MICROS <= value <= MAX_MICROS:
            raise DecodeError(_OUT_OF_RANGE, reason="bad_field")
        return _EPOCH + timedelta(microseconds=value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            if _WIDE_YEAR.match(value):
                raise DecodeError(_OUT_OF_RANGE, reason="bad_field") from None
        else:
            return _in_range(parsed)
    raise DecodeError("field 'occurred_at' must be an ISO-8601 time or microseconds since epoch",
                      reason="bad_field")


def _sub(m: Mapping[str, Any], key: str, required: bool) -> Mapping[str, Any] | None:
    value = m.get(key)
    if value is None:
        if required:
            raise DecodeError(f"missing required field '{key}'", reason="missing_field")
        return None
    if not isinstance(value, Mapping):
        raise DecodeError(f"field '{key}' must be an object", reason="bad_field")
    return value


@cache
def _known_fields() -> dict[str, frozenset[str]]:
    """Field names of the event record and of each nested record, from the bundled schema."""
    with schema_path("privacy_event.avsc").open("rb") as fh:
        doc = json.load(fh)
    out: dict[str, frozenset[str]] = {"": frozenset(f["name"] for f in doc["fields"])}
    for f in doc["fields"]:
        for branch in f["type"] if isinstance(f["type"], list) else [f["type"]]:
            if isinstance(branch, dict) and branch.get("type") == "record":
                out[f["name"]] = frozenset(g["name"] for g in branch["fields"])
    return out


_SAFE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}")


def _check_keys(m: Mapping[str, Any], section: str) -> None:
    known = _known_fields().get(section)
    if known is None:
        return
    unknown = [k for k in m if k not in known]
    if not unknown:
        return
    where = f"{section}." if section else ""
    key = unknown[0]
    if not isinstance(key, str) or not _SAFE_NAME.fullmatch(key):
        raise DecodeError(f"an unknown field in '{section or 'the event'}' (its name is not shown: not a "
                          f"field name); known: {', '.join(sorted(known))}", reason="unknown_field")
    close = difflib.get_close_matches(key, list(known), n=1)
    hint = f"; did you mean '{where}{close[0]}'?" if close else f"; known: {', '.join(sorted(known))}"
    raise DecodeError(f"unknown field '{where}{key}'{hint}", reason="unknown_field")


def event_from_mapping(m: Mapping[str, Any]) -> Event:
    """Build an Event from a decoded JSON object or Avro datum; raise DecodeError on faults.

    Every key must be a field of the schema: a misspelt ``"marketting"`` is an error naming it,
    never silently read as "no consent".
    """
    if not isinstance(m, Mapping):
        raise DecodeError("an event must be a JSON object", reason="bad_field")
    _check_keys(m, "")
    for section in _known_fields():
        sub = m.get(section) if section else None
        if isinstance(sub, Mapping):
            _check_keys(sub, section)
    kind = _enum(EventKind, m, "kind", "")
    actor_m = _sub(m, "actor", True)
    subject_m = _sub(m, "subject", True)
    assert actor_m is not None and subject_m is not None
    age = subject_m.get("age")
    if age is not None and (not isinstance(age, int) or isinstance(age, bool) or not 0 <= age < 200):
        raise DecodeError("field 'subject.age' must be a whole number from 0 to 199", reason="bad_field")
    categories = _req(m, "data_categories", "")
    if not isinstance(categories, list) or not all(isinstance(c, str) and c for c in categories):
        raise DecodeError("field 'data_categories' must be a list of strings", reason="bad_field")
    if not categories:
        raise DecodeError("field 'data_categories' must name at least one category",
                          reason="missing_field")
    recipient = None
    recipient_m = _sub(m, "recipient", False)
    if recipient_m is not None:
        recipient = Recipient(
            type=str(_str(recipient_m, "type", "recipient.")),
            id=str(_str(recipient_m, "id", "recipient.")),
            country=_str(recipient_m, "country", "recipient.", required=False),
            on_our_behalf=_bool(recipient_m, "on_our_behalf", "recipient.", None),
        )
    if kind is EventKind.DISCLOSURE and recipient is None:
        raise DecodeError("a DISCLOSURE must name its 'recipient'", reason="missing_field")
    if kind is not EventKind.DISCLOSURE and recipient is not None:
        raise DecodeError(f"an {kind.value} must not have a 'recipient'; use kind DISCLOSURE",
                          reason="bad_field")
    legal_m = _sub(m, "legal_request", False) or {}
    consent_m = _sub(m, "consent", False) or {}
    transfer_m = _sub(m, "transfer", False) or {}
    attributes = m.get("attributes") or {}
    if not isinstance(attributes, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in attributes.items()):
        raise DecodeError("field 'attributes' must map strings to strings", reason="bad_field")
    return Event(
        event_id=str(_str(m, "event_id", "")),
        occurred_at=_time(_req(m, "occurred_at", "")),
        kind=kind,
        policy_id=str(_str(m, "policy_id", "")),
        source_system=str(_str(m, "source_system", "")),
        actor=Actor(
            type=_enum(ActorType, actor_m, "type", "actor.", ActorType.OTHER),
            id=str(_str(actor_m, "id", "actor.")),
            role=_str(actor_m, "role", "actor.", required=False),
            organisation=_enum(ActorOrganisation, actor_m, "organisation", "actor.", ActorOrganisation.UNKNOWN),
        ),
        subject=Subject(
            id=_subject_id(subject_m),
            age=age,
            is_minor=_bool(subject_m, "is_minor", "subject.", None),
            region=_str(subject_m, "region", "subject.", required=False),
        ),
        data_categories=tuple(categories),
        purpose=str(_str(m, "purpose", "")),
        recipient=recipient,
        identifiability=_enum(Identifiability, m, "identifiability", "", Identifiability.IDENTIFIED),
        legal_basis=_str(m, "legal_basis", "", required=False),
        legal_request=LegalRequest(
            type=_enum(LegalRequestType, legal_m, "type", "legal_request.", LegalRequestType.NONE),
            reference=_str(legal_m, "reference", "legal_request.", required=False),
        ),
        consent=ConsentState(**{k: bool(_bool(consent_m, k, "consent.", False))
                                for k in ("marketing", "third_party_sharing", "guardian",
                                          "marketing_opt_out")}),
        transfer=Transfer(
            cross_border=bool(_bool(transfer_m, "cross_border", "transfer.", False)),
            destination_country=_str(transfer_m, "destination_country", "transfer.", required=False),
            safeguard=_enum(Safeguard, transfer_m, "safeguard", "transfer.", Safeguard.NONE),
        ),
        attributes=dict(attributes),
    )


_KINDS = {k.value: k for k in EventKind}
_ACTORS = {a.value: a for a in ActorType}
_ORGS = {o.value: o for o in ActorOrganisation}
_IDENT = {i.value: i for i in Identifiability}
_LEGAL = {t.value: t for t in LegalRequestType}
_SAFE = {t.value: t for t in Safeguard}


def event_from_datum(d: dict[str, Any]) -> Event:
    """Fast path for an Avro datum read with :func:`raw_event_schema`.

    Avro has already enforced every type and enum, so only the facts Avro cannot express are
    checked here (non-empty ids, a recipient exactly for disclosures, plausible ages).
    """
    actor, subject, recipient_d = d["actor"], d["subject"], d["recipient"]
    kind = _KINDS[d["kind"]]
    if not d["event_id"] or not d["policy_id"] or not d["source_system"] or not d["purpose"]:
        return event_from_mapping(d)  # slow path names the empty field
    if not actor["id"] or not subject_id_edges_clean(subject["id"]) or not d["data_categories"] \
            or not all(d["data_categories"]):
        return event_from_mapping(d)
    age = subject["age"]
    if age is not None and not 0 <= age < 200:
        return event_from_mapping(d)
    if not MIN_MICROS <= d["occurred_at"] <= MAX_MICROS:
        return event_from_mapping(d)
    if (recipient_d is None) is (kind is EventKind.DISCLOSURE):
        return event_from_mapping(d)
    recipient = None
    if recipient_d is not None:
        if not recipient_d["type"] or not recipient_d["id"]:
            return event_from_mapping(d)
        recipient = Recipient(recipient_d["type"], recipient_d["id"], recipient_d["country"],
                              recipient_d["on_our_behalf"])
    legal, consent, transfer = d["legal_request"], d["consent"], d["transfer"]
    return Event(
        d["event_id"], _EPOCH + timedelta(microseconds=d["occurred_at"]), kind, d["policy_id"],
        d["source_system"], Actor(_ACTORS[actor["type"]], actor["id"], actor["role"],
                                         _ORGS[actor["organisation"]]),
        Subject(subject["id"], age, subject["is_minor"], subject["region"]),
        tuple(d["data_categories"]), d["purpose"], recipient, _IDENT[d["identifiability"]], d["legal_basis"],
        LegalRequest(_LEGAL[legal["type"]], legal["reference"]),
        ConsentState(consent["marketing"], consent["third_party_sharing"], consent["guardian"],
                     consent["marketing_opt_out"]),
        Transfer(transfer["cross_border"], transfer["destination_country"], _SAFE[transfer["safeguard"]]),
        d["attributes"],
    )


# ---------------------------------------------------------------- Event -> mapping

def event_to_mapping(e: Event, *, json_time: bool = False) -> dict[str, Any]:
    """The Avro datum of an event (with ``json_time`` the time is ISO-8601 for JSON)."""
    return {
        "event_id": e.event_id,
        "occurred_at": e.occurred_at.isoformat() if json_time else e.occurred_at,
        "kind": e.kind.value,
        "policy_id": e.policy_id,
        "source_system": e.source_system,
        "actor": {"type": e.actor.type.value, "id": e.actor.id, "role": e.actor.role,
                  "organisation": e.actor.organisation.value},
        "subject": {"id": e.subject.id, "age": e.subject.age, "is_minor": e.subject.is_minor,
                    "region": e.subject.region},
        "data_categories": list(e.data_categories),
        "purpose": e.purpose,
        "recipient": None if e.recipient is None else {
            "type": e.recipient.type, "id": e.recipient.id, "country": e.recipient.country,
            "on_our_behalf": e.recipient.on_our_behalf},
        "identifiability": e.identifiability.value,
        "legal_basis": e.legal_basis,
        "legal_request": {"type": e.legal_request.type.value, "reference": e.legal_request.reference},
        "consent": {"marketing": e.consent.marketing,
                    "third_party_sharing": e.consent.third_party_sharing,
                    "guardian": e.consent.guardian,
                    "marketing_opt_out": e.consent.marketing_opt_out},
        "transfer": {"cross_border": e.transfer.cross_border,
                     "destination_country": e.transfer.destination_country,
                     "safeguard": e.transfer.safeguard.value},
        "attributes": dict(e.attributes),
    }


def canonical_bytes(e: Event) -> bytes:
    """The event's canonical bytes: its Avro binary encoding under the bundled schema.

    The audit record's ``input_digest`` is SHA-256 of these bytes, whether the event came from
    Kafka or from a file, so the same event always has the same digest. Map entries are sorted by
    key (UTF-8 bytes): the order a producer or a JSON file gave them does not change the digest.
    """
    mapping = event_to_mapping(e)
    mapping["attributes"] = dict(sorted(mapping["attributes"].items(), key=lambda kv: kv[0].encode()))
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, event_schema(), mapping)
    return buf.getvalue()


def event_to_json(e: Event) -> str:
    return json.dumps(event_to_mapping(e, json_time=True), separators=(",", ":"), sort_keys=True)


# ---------------------------------------------------------------- files

class DecodedLine:
    """One line or record of an input file: an Event, or the DecodeError that replaced it."""

    __slots__ = ("source", "line", "event", "error", "raw", "canonical")

    def __init__(self, source: str, line: int, event: Event | None, error: DecodeError | None,
                 raw: bytes, canonical: bytes | None = None) -> None:
        self.source, self.line, self.event, self.error, self.raw = source, line, event, error, raw
        #: the event's canonical Avro encoding when the input carried it (Avro records), else None
        self.canonical = canonical


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def decode_json_line(text: str | bytes) -> Event:
    try:
        obj = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        # the decoder's message names a position, never the content
        raise DecodeError(f"not valid JSON ({exc.__class__.__name__}: {str(exc)[:120]})",
                          reason="undecodable") from None
    except RecursionError:
        raise DecodeError("not valid JSON: nested too deeply", reason="undecodable") from None
    raw = text if isinstance(text, str) else text.decode("utf-8", "replace")
    refuse_lone_surrogates(raw, obj)
    return event_from_mapping(obj)


def refuse_lone_surrogates(raw: str, obj: Any) -> None:
    """DecodeError (``undecodable``) when ``obj``, parsed from the JSON text ``raw``, holds a lone
    surrogate: searched only when ``raw`` has a surrogate escape."""
    if _SURROGATE_ESCAPE.search(raw):
        _check_unicode(obj)


def _check_unicode(obj: Any) -> None:
    """JSON may escape a lone UTF-16 surrogate ("\\ud800"), which no UTF-8 output can hold."""
    stack = [obj]
    while stack:
        node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for k, v in items:
            for text in (k, v):
                if isinstance(text, str):
                    try:
                        text.encode("utf-8")
                    except UnicodeEncodeError:
                        raise DecodeError("a string holds a lone UTF-16 surrogate (\\ud800-\\udfff escape): "
                                          "not Unicode text", reason="undecodable") from None
            if isinstance(v, dict | list):
                stack.append(v)


def open_input(path: Path | str) -> tuple[BinaryIO, str, bool]:
    """(binary stream, source name, whether to close it) of a path, or of standard input for ``-``."""
    if str(path) == "-":
        return sys.stdin.buffer, "<stdin>", False
    try:
        return Path(path).open("rb"), str(path), True
    except IsADirectoryError:
        raise DecodeError("is a directory, not an events file", reason="undecodable", source=str(path)) from None
    except OSError as exc:
        raise DecodeError(f"cannot read: {exc.strerror}", reason="undecodable", source=str(path)) from None


class _Peeked:
    """A binary stream whose first bytes were read to sniff the format, put back in front."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self.head, self.rest = head, rest

    def read(self, n: int = -1) -> bytes:
        if not self.head:
            return self.rest.read(n)
        if n < 0:
            data, self.head = self.head + self.rest.read(), b""
            return data
        data, self.head = self.head[:n], self.head[n:]
        return data + (self.rest.read(n - len(data)) if len(data) < n else b"")

    def readline(self, limit: int = -1) -> bytes:
        if not self.head:
            return self.rest.readline(limit)
        nl = self.head.find(b"\n")
        if nl >= 0 and (limit < 0 or nl < limit):
            data, self.head = self.head[: nl + 1], self.head[nl + 1:]
            return data
        data, self.head = self.head, b""
        more = limit - len(data) if limit >= 0 else -1
        return data + (self.rest.readline(more) if more != 0 else b"")


def iter_json_lines(path: Path | str, fh: Any = None, source: str | None = None,
                    max_line: int = MAX_LINE_BYTES) -> Iterator[DecodedLine]:
    """Decode a JSON-lines file; blank lines and ``#`` comments are skipped. A line longer than
    ``max_line`` bytes is reported and skipped without being held in memory."""
    own = fh is None
    if fh is None:
        fh, source, own = open_input(path)
    source = source or str(path)
    try:
        number = 0
        while True:
            raw = fh.readline(max_line + 1)
            if not raw:
                return
            number += 1
            if len(raw) > max_line and not raw.endswith(b"\n"):
                while raw and not raw.endswith(b"\n"):  # skip the rest of the line in bounded reads
                    raw = fh.readline(max_line + 1)
                err = DecodeError(f"line longer than {max_line} bytes", reason="oversize", source=source,
                                  line=number)
                yield DecodedLine(source, number, None, err, b"")
                continue
            stripped = raw.strip()
            if not stripped or stripped.startswith(b"#"):
                continue
            try:
                yield DecodedLine(source, number, decode_json_line(stripped), None, stripped)
            except DecodeError as exc:
                exc.source, exc.line = source, number
                yield DecodedLine(source, number, None, exc, stripped)
    finally:
        if own:
            fh.close()


def iter_avro_file(path: Path | str) -> Iterator[DecodedLine]:
    """Decode an Avro object container file of events, with bounds (see auditor.events.container)."""
    from auditor.events.container import iter_container

    fh, source, own = open_input(path)
    try:
        yield from iter_container(fh, source)
    finally:
        if own:
            fh.close()


def iter_event_file(path: Path | str) -> Iterator[DecodedLine]:
    """Decode a JSON-lines or Avro container file (``-``: standard input), chosen by its first bytes.

    A file that cannot be used at all raises :class:`DecodeError` (when iteration starts); a bad
    line or record is yielded as a :class:`DecodedLine` with its error, and the rest is read.
    """
    from auditor.events.container import MAGIC, iter_container

    fh, source, own = open_input(path)
    try:
        head = fh.read(len(MAGIC))
        stream: Any = _Peeked(head, fh)
        if head == MAGIC:
            yield from iter_container(stream, source)
        else:
            yield from iter_json_lines(path, stream, source)
    finally:
        if own:
            fh.close()


def write_avro_file(path: Path, events: list[Event], fh: BinaryIO | None = None) -> None:
    """Write events as an Avro object container file (used by tests and tools)."""
    records = [event_to_mapping(e) for e in events]
    if fh is not None:
        fastavro.writer(fh, event_schema(), records)
        return
    with path.open("wb") as out:
        fastavro.writer(out, event_schema(), records)
