"""Features beyond numbers, end to end through the tabular kind's clean and normalize: a
category (one-hot or index; an unknown value rejected with its reason or given the default),
a boolean, the hour of day and day of week of a timestamp (UTC), a derived feature; the input
fields passed through travel with the batch."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from streamflow.codecs import decode_record_batch, encode_record_batch
from streamflow.inference.kinds import kind_for
from streamflow.metrics import Metrics
from streamflow.records import BytesColumn, RecordBatch
from streamflow.settings.loading import collect_settings, load_settings
from streamflow.stages.clean import time_parts
from tests.conftest import ROOT

SCHEMA = {
    "type": "record",
    "name": "Host",
    "fields": [
        {"name": "host", "type": "string"},
        {"name": "timestamp", "type": "long"},
        {"name": "rack", "type": ["null", "string"], "default": None},
        {"name": "hw", "type": ["null", "string"], "default": None},
        {"name": "on_battery", "type": ["null", "boolean"], "default": None},
        {"name": "temp", "type": ["null", "double"], "default": None},
    ],
}
PIPELINE = """
name = "hosts"
[topics]
raw = "h.raw"
scored = "h.scored"
dlq = "h.dlq"
[input]
schema = "host.avsc"
key_field = "host"
[output]
format = "json"
[model]
path = "{model}"
[result]
pass_through = ["rack"]
[[transforms]]
function = "to_fahrenheit:add"
[[features]]
name = "hw"
type = "category"
vocabulary = ["r640", "r750", "xe9680"]
required = true
{unknown}
[[features]]
name = "on_battery"
type = "bool"
default = false
[[features]]
name = "hour"
type = "hour_of_day"
required = true
[[features]]
name = "weekday"
type = "day_of_week"
required = true
[[features]]
name = "temp"
required = true
min = -20.0
max = 130.0
normalize = "none"
[[features]]
name = "temp_f"
derived = true
normalize = "none"
"""
TRANSFORM = "def add(cols):\n    return {'temp_f': cols['temp'] * 9 / 5 + 32}\n"
WEDNESDAY_0130 = 1764725400000  # 2025-12-03 01:30:00 UTC, a Wednesday


def pipeline(tmp_path: Path, unknown: str = 'unknown = "reject"', extra: str = "") -> Path:
    (tmp_path / "host.avsc").write_text(json.dumps(SCHEMA))
    (tmp_path / "to_fahrenheit.py").write_text(TRANSFORM)
    model = ROOT / "models/telemetry-anomaly/model.onnx"
    path = tmp_path / "hosts.toml"
    path.write_text(PIPELINE.format(model=model, unknown=unknown) + extra)
    return path


def records(*recs: dict[str, object]) -> list[bytes | None]:
    return [json.dumps(r).encode() for r in recs]


def reading(**kw: object) -> dict[str, object]:
    return {"host": "h1", "timestamp": WEDNESDAY_0130, "rack": "r7", "hw": "r750",
            "on_battery": True, "temp": 40.0, **kw}  # fmt: skip


def test_categories_booleans_and_time_parts_are_cleaned_and_one_hot_encoded(
    tmp_path: Path,
) -> None:
    s = load_settings(pipeline(tmp_path))
    kind = kind_for(s)
    assert s.model_width == 3 + 5  # one-hot hw takes 3 columns
    c = kind.clean(
        records(reading(), reading(hw="xe9680", on_battery=None), reading(hw="dell-9000")),
        [None] * 3,
    )
    assert c.ok.tolist() == [True, True, False]
    assert c.reasons[2] is not None and c.reasons[2].code == "unknown_category"
    assert c.reasons[2].text == "hw: 'dell-9000' is not in the vocabulary (r640, r750, xe9680)"
    # cleaned: the category's index, the boolean as 0/1 (default false), hour 1, Wednesday = 2
    np.testing.assert_array_equal(c.features[:2, :5], [[1, 1, 1, 2, 40], [2, 0, 1, 2, 40]])
    assert c.columns["rack"].tolist() == ["r7", "r7", "r7"]
    batch = RecordBatch(
        "h.raw", 0, np.arange(2), np.zeros(2, np.int64), BytesColumn.from_list([None] * 2),
        BytesColumn.from_list([b""] * 2), BytesColumn.from_list([b"h1"] * 2),
        c.event_ms[:2], c.features[:2], columns={k: v[:2] for k, v in c.columns.items()},
    )  # fmt: skip
    batch = decode_record_batch(encode_record_batch(batch))  # through the internal topic
    assert batch.columns["rack"].tolist() == ["r7", "r7"]
    stage = SimpleNamespace(
        metrics=Metrics.create(CollectorRegistry()), pipeline="hosts", stage="normalize"
    )
    prepared = kind.prepare(batch, stage)
    x = prepared.batches[0].features
    assert x.shape == (2, 8)
    np.testing.assert_array_equal(x[:, :3], [[0, 1, 0], [0, 0, 1]])  # one-hot r750, xe9680
    np.testing.assert_array_equal(x[:, 3:6], [[1, 1, 2], [0, 1, 2]])


def test_an_unknown_category_can_take_the_default(tmp_path: Path) -> None:
    s = load_settings(pipeline(tmp_path, 'unknown = "default"\ndefault = "r640"'))
    c = kind_for(s).clean(records(reading(hw="dell-9000"), reading(hw=None)), [None] * 2)
    assert c.ok.tolist() == [True, False] and c.features[0, 0] == 0.0  # r640's index
    assert c.reasons[1] is not None and c.reasons[1].text == "missing required field hw"


def test_a_value_of_the_wrong_type_is_dead_lettered_naming_the_field(tmp_path: Path) -> None:
    kind = kind_for(load_settings(pipeline(tmp_path)))
    c = kind.clean(
        records(reading(hw=7), reading(on_battery="yes"), reading(timestamp=None)), [None] * 3
    )
    assert c.ok.tolist() == [False, False, False]
    assert [e.text if e else None for e in c.errors] == [
        "json: field hw: expected a string, got int 7",
        "field on_battery: expected true or false, got str 'yes'",
        "json: missing field timestamp",
    ]


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ('vocabulary = ["a"]\n', "features[5] (temp_f).vocabulary: only a category feature"),
        ('[[features]]\nname = "x"\ntype = "category"\nnormalize = "none"\ndefault = "z"\n',
         "features[6] (x).vocabulary: a category needs its values"),
        ('[[features]]\nname = "y"\ntype = "bool"\ndefault = 3.0\n',
         "features[6] (y).default: must be true or false"),
        ('[[features]]\nname = "z"\ntype = "category"\nvocabulary = ["a"]\n'
         'unknown = "default"\nrequired = true\nnormalize = "none"\n',
         'features[6] (z).unknown: "default" needs a default'),
        ('[[features]]\nname = "w"\ntype = "category"\nvocabulary = ["a"]\nrequired = true\n'
         'normalize = "zscore"\nmean = 0.0\nstd = 1.0\n',
         "features[6] (w).normalize: a one-hot category is not scaled"),
    ],
)  # fmt: skip
def test_feature_type_keys_are_checked_naming_the_key(
    tmp_path: Path, extra: str, problem: str
) -> None:
    _, problems = collect_settings(pipeline(tmp_path, extra=extra))
    assert any(problem in p for p in problems), problems


def test_a_derived_feature_needs_an_after_clean_transform(tmp_path: Path) -> None:
    path = pipeline(tmp_path)
    path.write_text(
        path.read_text().replace('[[transforms]]\nfunction = "to_fahrenheit:add"\n', "")
    )
    _, problems = collect_settings(path)
    assert any("features[5] (temp_f).derived: a derived feature is set by" in p for p in problems)


def test_time_parts_are_utc() -> None:
    from streamflow.settings import FeatureSpec
    from streamflow.stages.clean import CleanRules

    rules = CleanRules.from_features(
        [FeatureSpec("h", type="hour_of_day"), FeatureSpec("d", type="day_of_week")]
    )
    ms = np.array([[0.0, 0.0], [WEDNESDAY_0130, WEDNESDAY_0130], [-1.0, -1.0]])
    out = time_parts(ms, np.zeros_like(ms, dtype=bool), rules)
    # 1970-01-01 00:00 was a Thursday (3); a millisecond before, Wednesday 23:00
    assert out.tolist() == [[0.0, 3.0], [1.0, 2.0], [23.0, 2.0]]
