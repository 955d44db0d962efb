"""Write the committed fixture trail ``rev2/`` (run once, by the auditor at the revision it names).

``rev2/trail`` was written by the auditor when ``schemas/audit_record.avsc`` was revision 2 (commit
93eb527): two chains, decisions, rejections and one CORRECTION record with ledger facts, signed
checkpoints. ``rev2/keys`` holds the test-only keys that signed it (never use them for anything
else). tests/unit/trail/test_trail_fixture.py checks that later revisions still verify, replay and
extend it. Re-running this script overwrites the fixture with the current revision: don't, unless
you are adding a new fixture directory for a new revision (pass its name).

    python tests/data/trails/make_fixture_trail.py rev2
"""

from __future__ import annotations

import shutil
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "unit" / "trail"))

from trailkit import T0, make_records  # noqa: E402

from auditor.trail import KeyRing, TrailWriter  # noqa: E402
from auditor.trail.record import CorrectedRecord, LedgerFacts, LedgerRead, RecordType  # noqa: E402


def main(name: str) -> None:
    root = Path(__file__).resolve().parent / name
    shutil.rmtree(root, ignore_errors=True)
    keys = KeyRing.generate(root / "keys", name="fixture.auditor.test")
    records = make_records(keys, 30, partitions=2, reject_every=9)
    ledger = LedgerFacts(0, 12, (LedgerRead("consent", "marketing", None, None, False, (3, 11)),),
                         CorrectedRecord("events/0", 2, (12,)))
    records[20] = records[20]._replace(record_type=RecordType.CORRECTION, ledger=ledger)
    clock = iter(T0 + timedelta(minutes=i) for i in range(1000))
    with TrailWriter.open(root / "trail", keys, checkpoint_every=8, checkpoint_seconds=3600,
                          clock=lambda: next(clock)) as w:
        for start in range(0, len(records), 10):
            w.append(records[start:start + 10])
            w.commit()
    print(f"wrote {root} at {datetime.now(UTC).isoformat(timespec='seconds')}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "rev2")
