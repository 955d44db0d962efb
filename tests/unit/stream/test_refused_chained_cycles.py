"""attfact: a refused message whose exception was raised from another one (``raise ... from exc``,
or inside an ``except`` block) leaves no reference cycle either. The exception the processor keeps
drops its traceback (bbe5769), but its ``__cause__`` and ``__context__`` kept theirs: their
frames link back (``f_back``) to the decode call and the batch, so the whole batch stayed alive
until a garbage collection found it, on the Python path for every truncated or garbled Avro body."""

from __future__ import annotations

import pytest
from streamkit import NOW, ROUTING, compliant, messages, packs, processor, wire
from test_stream_processor import _no_garbage_left

from auditor.native import NativeEventDecoder
from auditor.stream.processor import BatchProcessor
from auditor.trail.keys import Pseudonymizer

GOOD = wire(compliant())
CHAINED = {"truncated": GOOD[:20], "cut-short": GOOD[:-3], "garbled-body": GOOD[:10] + b"\xff" * 40}


@pytest.mark.parametrize("name", sorted(CHAINED))
def test_an_undecodable_avro_body_leaves_no_reference_cycle_on_the_python_path(name: str):
    _no_garbage_left(processor(), [GOOD, CHAINED[name], GOOD])


def test_a_decoder_fault_raised_while_handling_another_leaves_no_reference_cycle():
    p = processor()
    real = p.decoder.decode

    def decode(value: bytes | None):
        if value is not None and b"poison" in value:
            try:
                {}["missing"]
            except KeyError:
                raise RuntimeError("decoder bug") from None  # __context__ still set (suppressed, not dropped)
        return real(value)

    p.decoder.decode = decode  # type: ignore[method-assign]
    _no_garbage_left(p, [GOOD, wire(compliant(event_id="poison")), GOOD])



def test_a_compiled_decoder_fault_on_the_whole_batch_leaves_no_reference_cycle(monkeypatch: pytest.MonkeyPatch):
    """decode_facts failing for the whole batch (a compiled-code fault): the batch is decoded again
    the full way; the one exception NativePath.decode_facts returns for every message must not
    keep its traceback (its frame holds the exception and links back to the batch)."""
    p = BatchProcessor(NativeEventDecoder(), packs(), Pseudonymizer(b"k" * 32), ROUTING, "unit-1", clock=lambda: NOW)
    assert p.facts is not None

    def decode_facts(values):
        raise RuntimeError("compiled decoder bug")

    monkeypatch.setattr(p.hot.decoder, "decode_facts", decode_facts)  # type: ignore[attr-defined]
    _no_garbage_left(p, [GOOD, b"not avro at all", GOOD])


def test_an_item_the_compiled_sealer_refuses_leaves_no_reference_cycle(monkeypatch: pytest.MonkeyPatch):
    """A fact-path item the compiled sealer cannot build is sealed the full way (its record built
    in Python): the sealer's exception for it, kept in the round's seal results, must not keep its
    traceback (seal_each's frame holds those results and links back to the batch)."""
    p = BatchProcessor(NativeEventDecoder(), packs(), Pseudonymizer(b"k" * 32), ROUTING, "unit-1", clock=lambda: NOW)
    values = [GOOD, wire(compliant(event_id="second")), b"not avro at all"]
    p.process(messages(values))  # the memo knows them now
    p.commit_heads()
    sealer = p.hot.sealer  # type: ignore[attr-defined]
    real = sealer.seal_batch

    def seal_batch(records, heads, *layout):
        records = list(records)
        if any(type(r) is tuple for r in records):
            raise ValueError("a layout bug")
        return real(records, heads, *layout)

    monkeypatch.setattr(sealer, "seal_batch", seal_batch)
    assert p.facts is not None
    hits = p.facts.hits
    _no_garbage_left(p, values)
    assert p.facts.hits > hits  # the fact path took them, and the sealer refused its items
