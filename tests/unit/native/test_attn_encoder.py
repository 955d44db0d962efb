"""attn: the compiled record encoder (native/src/record.rs) given objects that are not what they
seem: NamedTuple subclasses whose attributes are not their tuple items, classes whose ``_fields``
lie, tuples of the wrong length or type, sequences whose length lies or that change while they
are encoded. The answer must be the reference's bytes (auditor.trail.canonical reads every field
by attribute) or a clean Python exception, never other bytes or a malformed record."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "trail"))
from trailkit import make_records  # noqa: E402

from auditor.native import NativeSealer  # noqa: E402
from auditor.trail import ChainHead  # noqa: E402
from auditor.trail.canonical import encode_body, record_from_bytes  # noqa: E402
from auditor.trail.chain import seal_bytes  # noqa: E402
from auditor.trail.record import AuditRecord, Facts, SourceRef, ViolationFacts  # noqa: E402

SEALER = NativeSealer()


def native_or_error(record: Any) -> bytes | Exception:
    try:
        return SEALER.encode_body(record)
    except Exception as exc:  # noqa: BLE001 - a clean exception is an acceptable answer
        return exc


def reference(record: Any) -> bytes | Exception:
    try:
        return encode_body(record)
    except Exception as exc:  # noqa: BLE001
        return exc


def assert_reference_or_refused(record: Any) -> None:
    got = native_or_error(record)
    if isinstance(got, bytes):
        assert got == reference(record)


# ---------------------------------------------------------------- attributes that are not the tuple's items

class RenamedRecord(AuditRecord):
    """An AuditRecord whose instance_id is not its tuple item (a subclass overriding a field)."""

    __slots__ = ()

    @property
    def instance_id(self) -> str:  # type: ignore[override]
        return "overridden-" + tuple.__getitem__(self, AuditRecord._fields.index("instance_id"))


class RenamedSource(SourceRef):
    __slots__ = ()

    @property
    def topic(self) -> str | None:  # type: ignore[override]
        return "another-topic"


class RenamedViolation(ViolationFacts):
    __slots__ = ()

    @property
    def reason(self) -> str:  # type: ignore[override]
        return "a reason of its own"


def test_a_subclass_whose_property_overrides_a_field_encodes_the_attribute(keys):
    """The reference reads ``record.instance_id``: the property's value, not the tuple's item."""
    r = make_records(keys, 1)[0]
    odd = RenamedRecord(*r)
    assert odd.instance_id != r.instance_id
    assert SEALER.encode_body(odd) == encode_body(odd) == encode_body(r._replace(instance_id=odd.instance_id))


def test_a_nested_subclass_whose_property_overrides_a_field_encodes_the_attribute(keys):
    r = make_records(keys, 1)[0]
    odd = r._replace(source=RenamedSource(*r.source))
    assert SEALER.encode_body(odd) == encode_body(odd) == encode_body(r._replace(
        source=r.source._replace(topic="another-topic")))


def test_an_array_item_whose_property_overrides_a_field_encodes_the_attribute(keys):
    r = next(x for x in make_records(keys, 40) if x.decision is not None and x.decision.violations)
    assert r.decision is not None
    odd = r._replace(decision=r.decision._replace(
        violations=tuple(RenamedViolation(*v) for v in r.decision.violations)))
    # what its attributes read (the reference's decision memo would answer for the equal plain tuple)
    plain = r._replace(decision=r.decision._replace(
        violations=tuple(v._replace(reason="a reason of its own") for v in r.decision.violations)))
    assert SEALER.encode_body(odd) == encode_body(plain)


class LyingFields(tuple):  # type: ignore[type-arg]
    """A tuple subclass whose ``_fields`` names its items in another order than its attributes read them."""

    __slots__ = ()
    _fields = ("topic", "partition", "offset", "file", "line")
    topic = property(lambda self: self[2])
    partition = property(lambda self: self[1])
    offset = property(lambda self: self[0])
    file = property(lambda self: self[3])
    line = property(lambda self: self[4])


def test_a_tuple_whose_fields_lie_encodes_its_attributes(keys):
    r = make_records(keys, 1)[0]
    odd = r._replace(source=LyingFields(("t", 7, None, None, None)))
    assert odd.source.topic is None and odd.source.offset == "t"
    assert_reference_or_refused(odd)  # the reference refuses it (an offset that is a str)
    odd = r._replace(source=LyingFields((5, 7, "t", None, None)))
    assert SEALER.encode_body(odd) == encode_body(r._replace(source=SourceRef("t", 7, 5)))


# ---------------------------------------------------------------- tuples of the wrong length or type

def test_a_record_tuple_of_the_wrong_length_is_refused_or_encoded_as_the_reference(keys):
    r = make_records(keys, 1)[0]
    for n in (0, 1, 4, 8, len(r) - 1):
        assert isinstance(native_or_error(tuple.__new__(AuditRecord, tuple(r)[:n])), Exception)
    longer = tuple.__new__(AuditRecord, (*r, "extra", None))
    assert SEALER.encode_body(longer) == encode_body(longer)
    facts_short = r._replace(facts=tuple.__new__(Facts, tuple(r.facts)[:5]))
    assert isinstance(native_or_error(facts_short), Exception)


# (not a dict: a dict is read by key, as documented)
@pytest.mark.parametrize("value", [None, 1, "text", b"bytes", 1.5, (), [], object()])
def test_a_nested_record_of_another_type_is_refused_or_encoded_as_the_reference(keys, value):
    r = make_records(keys, 1)[0]
    for field in ("source", "facts", "decision"):
        assert_reference_or_refused(r._replace(**{field: value}))


# ---------------------------------------------------------------- sequences that lie or change

class LyingLength(Sequence[str]):
    """A sequence that says it holds more (or fewer) items than it yields."""

    def __init__(self, items: tuple[str, ...], says: int) -> None:
        self.items, self.says = items, says

    def __len__(self) -> int:
        return self.says

    def __getitem__(self, i: Any) -> Any:
        return self.items[i]

    def __iter__(self) -> Iterator[str]:
        return iter(self.items)

    def __hash__(self) -> int:
        return hash(self.items)


@pytest.mark.parametrize("says", [0, 1, 5, 100])
def test_a_sequence_whose_length_lies_is_never_a_malformed_array(keys, says):
    """The array's count is written from len(); the items from iterating. Where they disagree the
    record would say 3 categories and hold 2 (not Avro, and not the reference: it cannot be read
    back): a clean exception, or the bytes of what was iterated."""
    r = make_records(keys, 1)[0]
    assert r.facts is not None
    items = ("contact", "health")
    got = native_or_error(r._replace(facts=r.facts._replace(data_categories=LyingLength(items, says))))
    if says != len(items) and says != 0:
        assert isinstance(got, Exception) or got == encode_body(r._replace(facts=r.facts._replace(
            data_categories=items)))


class Shrinking:
    """A violation (read by attribute) that empties the list of violations it is in when its rule id is read."""

    holder: list[Any] = []

    def __init__(self, v: ViolationFacts) -> None:
        self.v = v

    @property
    def rule_id(self) -> str:
        Shrinking.holder.clear()
        return self.v.rule_id

    def __getattr__(self, name: str) -> Any:
        return getattr(self.v, name)


def test_a_list_that_changes_while_it_is_encoded_is_never_a_malformed_array(keys):
    r = next(x for x in make_records(keys, 40) if x.decision is not None and len(x.decision.violations) >= 1)
    assert r.decision is not None
    violations = [Shrinking(v) for v in r.decision.violations] * 2
    Shrinking.holder = violations
    odd = r._replace(decision=r.decision._replace(violations=violations))
    try:
        (sealed,), _ = SEALER.seal_batch([odd], {})
    except Exception:  # noqa: BLE001 - refused: a clean exception
        return
    back = record_from_bytes(sealed.data)  # the block's count matches its items, and the record ends
    assert back.decision is not None and len(back.decision.violations) in (1, len(violations))


def test_records_of_many_shapes_in_one_batch_seal_as_the_reference(keys):
    """A batch mixing plain records, subclasses with overriding properties and lying tuples."""
    rs = make_records(keys, 12)
    batch = [RenamedRecord(*x) if i % 3 == 0 else x for i, x in enumerate(rs)]
    sealed, _ = SEALER.seal_batch(batch, {})
    heads: dict[str, ChainHead] = {}
    for s, x in zip(sealed, batch, strict=True):
        head = heads.get(x.chain_id) or ChainHead.genesis(x.chain_id)
        data, heads[x.chain_id] = seal_bytes(head, x)
        assert s.data == data


# ---------------------------------------------------------------- Python code run while the encoder reads a class

_REENTRANT = r'''
import sys
sys.path.insert(0, sys.argv[1])
from typing import NamedTuple
from trailkit import make_records
from auditor.native import NativeSealer
from auditor.trail import KeyRing
import tempfile, pathlib

SEALER = NativeSealer()
keys = KeyRing.generate(pathlib.Path(tempfile.mkdtemp()) / "keys")
r = make_records(keys, 1)[0]
SEALER.encode_body(r)  # the AuditRecord class is known to the encoder


class Meta(type):
    @property
    def _fields(cls):
        SEALER.encode_body(r)  # Python code the class runs when asked its fields: it encodes a record
        return ("topic", "partition", "offset", "file", "line")


class Source(tuple, metaclass=Meta):
    __slots__ = ()
    topic = property(lambda self: self[0])
    partition = property(lambda self: self[1])
    offset = property(lambda self: self[2])
    file = property(lambda self: self[3])
    line = property(lambda self: self[4])


odd = r._replace(source=Source(("t", 1, 2, None, None)))
assert SEALER.encode_body(odd)
print("ok")
'''


def test_a_class_whose_fields_run_the_encoder_again_does_not_hang(tmp_path):
    """The encoder asks a tuple's class for ``_fields`` once; Python code run then (a metaclass
    property) may call the encoder again. Before: the positions cache's lock was held while asking,
    and the nested call waited for it forever (a deadlock of the thread, GIL held)."""
    import subprocess

    script = tmp_path / "reentrant.py"
    script.write_text(_REENTRANT)
    trail = str(Path(__file__).resolve().parents[1] / "trail")
    try:
        done = subprocess.run([sys.executable, str(script), trail], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("the nested encode call never returned (deadlock)")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok"


_MAP_SCHEMA = """{"type": "record", "name": "R", "fields": [
  {"name": "chain_id", "type": "string"}, {"name": "seq", "type": "long"},
  {"name": "prev_hash", "type": {"type": "fixed", "name": "H", "size": 32}}, {"name": "body_len", "type": "long"},
  {"name": "things", "type": {"type": "map", "values": {"type": "record", "name": "T", "fields": [
      {"name": "name", "type": "string"}]}}},
  {"name": "record_hash", "type": "H"}]}"""


class Grows:
    """A map value (a record read by attribute) that adds an entry to the dict it is in when read."""

    def __init__(self, holder: dict[str, Any]) -> None:
        self.holder = holder

    @property
    def name(self) -> str:
        self.holder[f"k{len(self.holder)}"] = Grows(self.holder)
        return "x"


def test_a_dict_that_changes_while_it_is_encoded_raises_a_python_exception():
    """A map given as a dict that grows while its values are encoded (a value's property adds to
    it): an Exception the caller can catch. Before: PyO3's dict iterator panicked, a PanicException
    (a BaseException: ``except Exception`` does not stop it)."""
    sealer = NativeSealer(_MAP_SCHEMA)
    things: dict[str, Any] = {}
    things["a"] = Grows(things)
    with pytest.raises(Exception):  # noqa: B017, PT011 - any Exception; a BaseException fails the test
        sealer.encode_body({"things": things})
