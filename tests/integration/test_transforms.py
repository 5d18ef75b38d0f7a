"""User transforms on the real pipeline, in both topologies: a module beside the pipeline file,
run after clean (one refuses rows, one raises on poison rows) and after the model (halves the
score). Every record is scored or dead-lettered with its reason; the scores are the model's own,
halved."""

from __future__ import annotations

import io
from pathlib import Path

import fastavro
import numpy as np
import pytest

from streamflow.codecs import load_schema
from streamflow.collectors.produce import RawProducer
from tests.conftest import PIPELINE, ROOT
from tests.integration.helpers import read_topic, running_pipeline
from tests.integration.test_pipeline_e2e import reference_scores

pytestmark = pytest.mark.integration

TRANSFORMS = """
import numpy as np


def refuse_hot(cols):
    return {}, ["too hot to score" if t > 90 else None for t in cols["cpu_temp_c"].tolist()]


def poison(cols):
    if np.any(np.isclose(cols["cpu_temp_c"], 66.6)):
        raise ValueError("66.6 is cursed")
    return {}


def halve_score(cols):
    return {"score": cols["score"] / 2}
"""


def pipeline_with_transforms(folder: Path) -> Path:
    (folder / "my_transforms.py").write_text(TRANSFORMS)
    text = PIPELINE.read_text().replace('"../', f'"{ROOT}/')
    text += "".join(
        f'\n[[transforms]]\nfunction = "my_transforms:{name}"\nat = "{at}"\n'
        for name, at in (("refuse_hot", "after_clean"), ("poison", "after_clean"),
                         ("halve_score", "after_model"))
    )  # fmt: skip
    path = folder / "with-transforms.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("topology", ["stages", "chained"])
def test_transforms_run_in_both_topologies_and_bad_rows_are_dead_lettered(
    topology: str, pipeline_overrides: dict[str, str], bootstrap: str, tmp_path: Path
) -> None:
    path = pipeline_with_transforms(tmp_path)
    overrides = {**pipeline_overrides, "runtime.topology": topology}
    with running_pipeline(overrides, path) as (settings, _):
        raw = RawProducer(settings, bootstrap)
        records = [
            {"device_id": f"d{i % 7}", "timestamp": 1764000000000 + i, "cpu_temp_c": 40.0 + i % 40,
             "power_w": 300.0 + i, "cpu_util_pct": 20.0}
            for i in range(300)
        ]  # fmt: skip
        for i in (10, 150, 290):
            records[i]["cpu_temp_c"] = 66.6  # poison rows: the transform raises on them
        for i in (20, 21, 200):
            records[i]["cpu_temp_c"] = 95.0  # refused by the transform, with a reason
        for r in records:
            raw.send_record(r)
        assert raw.flush() == 0
        t = settings.topics
        scored = read_topic(bootstrap, t.scored, until=294, timeout_s=90)
        dead = read_topic(bootstrap, t.dlq, until=6, timeout_s=30)
    assert len(scored) == 294 and len(dead) == 6
    reasons = sorted(
        (int(m.headers["sf-source-offset"]) >= 0, m.headers["sf-reason-code"].decode(),
         m.headers["sf-reason"].decode(), m.headers["sf-error-class"].decode())
        for m in dead
    )  # fmt: skip
    cursed = "transform poison raised ValueError: 66.6 is cursed"
    raised = ("transform_error", cursed, "TransformError")
    refused = ("transform_rejected", "transform refuse_hot: too hot to score", "ValidationError")
    assert [r[1:] for r in reasons] == [raised] * 3 + [refused] * 3
    schema = load_schema(settings.output.schema)
    results = [fastavro.schemaless_reader(io.BytesIO(m.value), schema, None) for m in scored]
    got = {r["timestamp"] - 1764000000000: r["score"] for r in results}
    bad = {10, 150, 290, 20, 21, 200}
    assert sorted(got) == [i for i in range(300) if i not in bad]
    raw_values = [raw.codec.encode(records[i]) for i in sorted(got)]
    want = reference_scores(raw_values) / 2  # the model's own score, halved after the model
    np.testing.assert_allclose([got[i] for i in sorted(got)], want, rtol=1e-5, atol=1e-6)
