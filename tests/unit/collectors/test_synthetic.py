import json
from collections import Counter
from pathlib import Path

import fastavro

from streamflow.codecs import load_schema
from streamflow.collectors.synthetic import ANOMALY_KINDS, FAULT_KINDS, REQUIRED, TelemetryGenerator
from streamflow.settings.loading import load_settings
from tests.conftest import PIPELINE


def test_same_seed_same_readings() -> None:
    a = TelemetryGenerator(seed=5).sample(500)
    b = TelemetryGenerator(seed=5).sample(500)
    assert [s.record for s in a] == [s.record for s in b] or json.dumps(
        [s.record for s in a]
    ) == json.dumps([s.record for s in b])  # NaN != NaN, but serialises the same


def test_rates_kinds_and_ranges() -> None:
    samples = TelemetryGenerator(seed=1, anomaly_rate=0.02, malformed_rate=0.03).sample(20_000)
    faults = Counter(s.fault for s in samples if s.fault)
    assert 0.025 < sum(faults.values()) / 20_000 < 0.035
    assert set(faults) == set(FAULT_KINDS)
    kinds = Counter(s.anomaly_kind for s in samples if s.anomaly)
    assert 0.015 < sum(kinds.values()) / 20_000 < 0.025 and set(kinds) == set(ANOMALY_KINDS)
    features = {f.name: f for f in load_settings(PIPELINE, environ={}).features}
    schema = load_schema(str(Path(PIPELINE).parent.parent / "schemas/telemetry_reading.avsc"))
    good = [s for s in samples if s.fault is None]
    assert {s.encoding for s in good} == {"avro", "json"}
    for s in good:
        assert all(s.record[r] is not None for r in REQUIRED)
        for name, f in features.items():
            v = s.record[name]
            if v is not None and f.out_of_range == "reject":
                assert f.min <= v <= f.max, (name, v, s.anomaly_kind)  # type: ignore[operator]
        assert fastavro.validation.validate(s.record, schema, raise_errors=False)
    assert len({s.record["device_id"] for s in good}) > 150
    ts = [s.record["timestamp"] for s in samples]
    assert ts == sorted(ts)
