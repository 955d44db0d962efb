"""The ledger feed's pure parts: the co-partitioning check and the store's place per instance."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from auditor.config import load_config
from auditor.errors import ConfigError
from auditor.exitcodes import exit_code
from auditor.stream.ledgerfeed import _chain_key, check_copartitioned, store_path


def metadata(**topics: int) -> SimpleNamespace:
    return SimpleNamespace(topics={name.replace("_", "-"): SimpleNamespace(partitions=dict.fromkeys(range(n)))
                                   for name, n in topics.items()})


def test_equal_partition_counts_pass_and_give_the_count():
    assert check_copartitioned(metadata(events=6, facts=6), ["events"], "facts", "b:9092") == 6


def test_a_facts_topic_with_other_counts_is_a_config_error_naming_both_and_the_fix():
    with pytest.raises(ConfigError) as info:
        check_copartitioned(metadata(events=3, more_events=4, facts=4), ["events", "more-events"], "facts", "b:9092")
    text = str(info.value)
    assert "facts has 4 partition(s) but events has 3" in text
    assert "more-events" not in text.split("but", 1)[1].split(":")[0]  # 4 = 4: not listed
    assert "Fix: recreate facts with 3 partition(s)" in text and "unset ledger.dir" in text
    assert exit_code(info.value) == 2


def test_a_missing_facts_topic_is_a_config_error():
    with pytest.raises(ConfigError, match="facts topic facts does not exist on b:9092"):
        check_copartitioned(metadata(events=3), ["events"], "facts", "b:9092")


def test_each_instance_has_a_store_of_its_own(tmp_path):
    cfg = load_config(None, env={}, overrides={"instance_id": "pod-7", "ledger.dir": str(tmp_path)})
    assert store_path(cfg) == tmp_path / "pod-7"


def test_chain_ids_name_their_source_partition():
    assert _chain_key("a/b-topic/12") == ("a/b-topic", 12)
