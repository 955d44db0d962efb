"""attfact: a refused message whose exception was raised from another one (``raise ... from exc``,
or inside an ``except`` block) leaves no reference cycle either. The exception the processor keeps
drops its traceback (bbe5769), but its ``__cause__`` and ``__context__`` kept theirs: their
frames link back (``f_back``) to the decode call and the batch, so the whole batch stayed alive
until a garbage collection found it, on the Python path for every truncated or garbled Avro body."""

from __future__ import annotations

import pytest
from streamkit import compliant, processor, wire
from test_stream_processor import _no_garbage_left


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

