"""One function for the chain id and one for the audit partition, used everywhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from auditor.trail.chainid import audit_partition, chain_id, file_chain_id, is_file_chain, source_partition
from auditor.trail.record import SourceRef

PACKAGE = Path(__file__).resolve().parents[3] / "auditor"


def test_chain_ids_of_kafka_and_file_sources():
    assert chain_id("privacy.events", 3) == "privacy.events/3" == SourceRef.kafka("privacy.events", 3, 9).chain_id
    assert chain_id("t", None) == "t/0"
    assert file_chain_id("events.jsonl") == "file:events.jsonl" == SourceRef.from_file("events.jsonl", 2).chain_id
    assert is_file_chain("file:x") and not is_file_chain("x/1")
    assert source_partition(chain_id("a.b-c_d", 17)) == 17


@pytest.mark.parametrize("bad", ["file:events.jsonl", "no-partition", "/3", "t/x", "t/-1"])
def test_a_chain_id_that_names_no_partition_is_refused(bad):
    with pytest.raises(ValueError):
        source_partition(bad)


def test_every_chain_of_a_partition_lands_in_one_audit_partition():
    assert [audit_partition(p, 4) for p in range(9)] == [0, 1, 2, 3, 0, 1, 2, 3, 0]
    assert audit_partition(None, 3) == 0 and audit_partition(5, 1) == 0
    with pytest.raises(ValueError):
        audit_partition(1, 0)


def test_no_other_module_computes_them():
    """A second place that builds '<topic>/<partition>' ids or maps partitions onto the audit
    topic by its own modulo could disagree with these; the daemon, the restore of chain heads,
    the file copy's back-fill and the offline trail call chainid instead."""
    made_here = PACKAGE / "trail" / "chainid.py"
    modulo = re.compile(r"partition\w*\)?\s*%|%\s*(?:self\.)?[\w.]*audit_partitions|%\s*len\([^)]*partitions")
    chain_fstring = re.compile(r'f"\{[^}"]*topic\}/\{[^}"]*partition[^}"]*\}"')
    file_prefix = re.compile(r'"file:(?:\{|")|startswith\("file:"\)')
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path == made_here:
            continue
        lines = path.read_text(encoding="utf-8").splitlines()
        for n, line in enumerate(lines, 1):
            if line.rstrip().endswith("%") and n < len(lines):
                line = f"{line.rstrip()} {lines[n].strip()}"  # a modulo continued on the next line
            if "log." in line:
                continue  # '<topic>/<partition>' in a log line names a partition, not a chain
            if modulo.search(line) or chain_fstring.search(line) or file_prefix.search(line):
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{n}: {line.strip()}")
    assert offenders == []
