"""The pure rules of kafka/groups.py: lag per partition, members a broker leaves out (the reads
themselves run against a broker in tests/integration/test_status.py)."""

from __future__ import annotations

from streamflow.kafka.groups import (
    GroupStatus,
    Member,
    PartitionLag,
    partition_lag,
    reported_members,
    starts_from_earliest,
)
from streamflow.settings.loading import load_settings
from tests.conftest import PIPELINE


def test_lag_is_end_minus_committed_never_negative() -> None:
    assert partition_lag(100, 0, 130, from_start=True) == 30
    assert partition_lag(130, 0, 130, from_start=True) == 0
    assert partition_lag(140, 0, 130, from_start=True) == 0  # a stale end offset
    assert partition_lag(10, 50, 130, from_start=True) == 80  # committed before the log start


def test_a_partition_never_committed_counts_from_the_log_start_or_is_unknown() -> None:
    assert partition_lag(None, 20, 130, from_start=True) == 110
    assert partition_lag(None, 20, 130, from_start=False) is None


def test_the_agents_reset_policy_decides_where_an_uncommitted_partition_starts() -> None:
    assert starts_from_earliest(load_settings(PIPELINE, environ={}))
    latest = load_settings(PIPELINE, {"kafka.consumer.auto.offset.reset": "largest"}, environ={})
    assert not starts_from_earliest(latest)


def test_a_live_group_without_members_has_them_not_reported() -> None:
    m = Member("m-1", "c", "/h", (("t", 0),))
    assert reported_members("stable", ()) is None  # Tansu's answer to ConsumerGroupDescribe
    assert reported_members("empty", ()) == ()
    assert reported_members("stable", (m,)) == (m,)


def test_group_lag_sums_the_known_lags() -> None:
    rows = (PartitionLag("t", 0, 5, 0, 9, 1, 4), PartitionLag("t", 1, None, 0, 3, 1, None))
    assert GroupStatus("g", ("t",), "stable", None, rows).lag == 4
