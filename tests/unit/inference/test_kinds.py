"""Model kinds are objects registered by name; each serves the steps without the steps branching."""

from __future__ import annotations

import numpy as np
import pytest

from streamflow.errors import ConfigError
from streamflow.inference.kinds import ModelKind, kind_class, kind_for
from streamflow.settings.loading import load_settings
from tests.conftest import PIPELINE, ROOT


@pytest.mark.parametrize(
    "path, name", [(PIPELINE, "tabular"), (ROOT / "pipelines" / "text.toml", "text-embedding")]
)
def test_each_pipeline_gets_its_kind_and_the_kind_describes_its_inputs(
    path: object, name: str
) -> None:
    s = load_settings(str(path), environ={})
    kind: ModelKind = kind_for(s)
    assert kind.name == name == s.model.kind
    assert kind.describe() and kind.input_names
    rows = kind.sample_inputs(5, 16)
    assert rows.dtype == np.float32 and len(rows) == 5
    np.testing.assert_array_equal(rows, kind.sample_inputs(5, 16))  # the same every run


def test_an_unknown_kind_is_refused_naming_the_key() -> None:
    with pytest.raises(ConfigError, match="model.kind: must be one of tabular, text-embedding"):
        kind_class("onnx-magic")


def test_the_tabular_kind_feeds_its_input_and_reads_one_score_per_row() -> None:
    from streamflow.inference.session import load_model

    model = load_model(load_settings(PIPELINE, {"runtime.device": "cpu"}, environ={}))
    kind = model.kind
    assert kind is not None and kind.output_names == ("score",)
    x = np.zeros((3, 16), np.float32)
    assert list(kind.feeds(x)) == ["features"]
    out = kind.outputs([np.array([[0.1], [0.2], [0.3]], np.float32)], x)
    np.testing.assert_allclose(out["score"], [0.1, 0.2, 0.3], rtol=1e-7)
    assert [f.name for f in kind.output_fields()] == ["score", "label"]
