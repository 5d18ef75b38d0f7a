"""``streamflow consume`` on the results topic of a pipeline without ``output.schema``: results
are decoded with the schema the pipeline's declaration generates (it used to fail on the empty
path)."""

from __future__ import annotations

from streamflow.cli.consume import codec_for
from streamflow.settings.loading import load_settings
from tests.conftest import ROOT


def test_results_of_a_generated_schema_decode() -> None:
    s = load_settings(ROOT / "pipelines/fleet-health.toml", environ={})
    assert not s.output.schema
    codec = codec_for(s, s.topics.scored)
    assert codec is not None
    rec = {"host": "h1", "timestamp": 1764000000000, "health": "thermal", "p_healthy": 0.1,
           "p_thermal": 0.7, "p_power": 0.1, "p_disk": 0.1, "rack": "r1", "status": None,
           "model_name": "fleet-health", "model_version": "1.0.0", "latency_ms": 2.5}  # fmt: skip
    assert codec.decode(codec.encode(rec)) == rec
