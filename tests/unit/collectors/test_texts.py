"""The synthetic text collector (streamflow/collectors/texts.py)."""

from __future__ import annotations

from collections import Counter

import fastavro

from streamflow.codecs import load_schema
from streamflow.collectors.texts import FAULTS, TextGenerator
from tests.conftest import ROOT


def test_same_seed_same_texts_and_faults_at_the_rate() -> None:
    a, b = (
        TextGenerator(seed=3, start_ms=0).sample(3000),
        TextGenerator(seed=3, start_ms=0).sample(3000),
    )
    assert [s.record for s in a] == [s.record for s in b]
    faults = Counter(s.fault for s in a if s.fault)
    assert 0.01 < sum(faults.values()) / 3000 < 0.03 and set(faults) == set(FAULTS)


def test_good_texts_are_valid_records_of_the_schema_in_every_topic_and_of_varied_length() -> None:
    schema = load_schema(str(ROOT / "schemas/text_record.avsc"))
    good = [s for s in TextGenerator(seed=1).sample(2000) if s.fault is None]
    assert all(fastavro.validation.validate(s.record, schema, raise_errors=False) for s in good)
    assert {s.anomaly_kind for s in good} == {"overheating", "disk", "network", "other"}
    lengths = [len(s.record["text"].split()) for s in good]
    assert (
        min(lengths) <= 8 and max(lengths) >= 30
    )  # short log lines and long tickets: buckets matter
