"""Each model shape a pipeline accepts (``inference/outputs.py``), proven with the model a user
would bring: a scikit-learn pipeline through skl2onnx, LightGBM through onnxmltools.

Each test trains a small model (``exports.py``), writes a pipeline file that reads four
telemetry readings and declares ``[[outputs]]`` for it, loads it as a worker does
(``load_model``: ``start`` maps the outputs, probing a ZipMap's classes), runs the model and
encodes the results (``LoadedModel.run_all``, ``kind.results``), decodes them with the
generated result schema and compares every field with what the estimator itself says
(``predict``, ``predict_proba``). ONNX Runtime computes in float32, the estimators in float64:
probabilities agree within ``ATOL`` (measured: under 1e-6 for these models), a regression
within ``RTOL`` (its values are thousands of rpm). ``streamflow validate``'s model checks
(``file_problems``) are asserted word for word for each thing that does not fit.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import fastavro
import numpy as np
import pytest

from streamflow.cli.schema import generated_schema
from streamflow.cli.validate import validate
from streamflow.errors import ModelError
from streamflow.inference.kinds import file_problems
from streamflow.inference.scoring import score_rows
from streamflow.inference.session import load_model
from streamflow.records import BytesColumn, RecordBatch
from streamflow.settings import Settings
from streamflow.settings.loading import load_settings
from tests.conftest import ROOT
from tests.unit.inference.exports import (
    FEATURES,
    HEAT,
    INPUT,
    Exported,
    double_input_classifier,
    fan_regressor,
    heat_classifier,
    heat_lightgbm,
    overheat_classifier,
    readings,
)

ATOL = 1e-5  # probabilities: float32 in ONNX Runtime against float64 in the estimator
RTOL = 1e-6  # a regression's value, relative
ROWS = readings(200, seed=7)  # the records scored: not the training rows

# The telemetry pipeline's input (its schema, key and timestamp), four of its readings, raw.
PIPELINE = """\
name = "model-shapes"

[topics]
raw = "shapes.raw"
scored = "shapes.scored"
dlq = "shapes.dlq"

[input]
schema = "{schema}"
key_field = "device_id"
timestamp_field = "timestamp"

[output]
format = "avro"

[model]
path = "{model}"
name = "shapes"
version = "1"
input = "{input}"

[runtime]
device = "cpu"
"""
FEATURE = """
[[features]]
name = "{name}"
default = 0.0
min = -1000.0
max = 10000.0
out_of_range = "reject"
normalize = "none"
"""


def pipeline(
    directory: Path,
    model: Exported,
    outputs: str,
    *,
    input: str = INPUT,
    features: tuple[str, ...] = FEATURES,
) -> Settings:
    """A pipeline file for ``model`` with the ``[[outputs]]`` tables ``outputs``, loaded."""
    path = directory / "pipeline.toml"
    text = PIPELINE.format(
        schema=ROOT / "schemas/telemetry_reading.avsc", model=model.path, input=input
    )
    path.write_text(text + "".join(FEATURE.format(name=f) for f in features) + "\n" + outputs)
    return load_settings(path)


def batch_of(x: np.ndarray) -> RecordBatch:
    """``x`` as a normalized batch from one partition of the raw topic."""
    n = len(x)
    ids = BytesColumn.from_list([f"rack1-node{i}".encode() for i in range(n)])
    ms = 1764000000000 + np.arange(n, dtype=np.int64)
    return RecordBatch(
        "shapes.raw", 0, np.arange(n), ms, ids, BytesColumn.from_list([b""] * n), ids, ms, x,
        stage="normalize",
    )  # fmt: skip


def results(s: Settings, x: np.ndarray = ROWS) -> dict[str, list[Any]]:
    """The result records for the rows ``x``, as a worker writes them and a consumer decodes
    them with the generated schema: a column per field."""
    model = load_model(s)
    assert model.kind is not None
    encoded = model.kind.results(batch_of(x), model.run_all(x), model, np.zeros(len(x)))
    schema = fastavro.parse_schema(generated_schema(s))
    records = [
        cast(dict[str, Any], fastavro.schemaless_reader(io.BytesIO(m), schema)) for m in encoded
    ]
    assert len(records) == len(x)
    return {name: [r[name] for r in records] for name in records[0]}


def softmax(a: np.ndarray) -> np.ndarray:
    e = np.exp(a - a.max(axis=1, keepdims=True))
    return np.asarray(e / e.sum(axis=1, keepdims=True))


# ---- the models, trained once for the module -----------------------------------------------


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def heat_names(models: Path) -> Exported:
    return heat_classifier(models, string_classes=True)


@pytest.fixture(scope="module")
def heat_ints(models: Path) -> Exported:
    return heat_classifier(models, string_classes=False, zipmap=False)


@pytest.fixture(scope="module")
def overheat(models: Path) -> Exported:
    return overheat_classifier(models)


@pytest.fixture(scope="module")
def fan(models: Path) -> Exported:
    return fan_regressor(models)


# ---- 1. string classes, ZipMap ----------------------------------------------------------------

HEAT_NAMES_OUTPUTS = """
[[outputs]]
field = "heat"
tensor = "output_label"

[[outputs]]
field = "p"
tensor = "output_probability"
labels = ["cool", "hot", "warm"]

[[outputs]]
field = "likeliest"
tensor = "output_probability"
post = "argmax"
score_field = "likeliest_p"

[[outputs]]
field = "top2"
tensor = "output_probability"
post = "top_k"
k = 2
score_field = "top2_p"

[[outputs]]
field = "hot_alert"
tensor = "output_probability"
post = "threshold"
column = 1
"""


def test_string_classes_with_a_zipmap_give_the_label_and_each_class_probability(
    heat_names: Exported, tmp_path: Path
) -> None:
    got = results(pipeline(tmp_path, heat_names, HEAT_NAMES_OUTPUTS))
    clf = heat_names.estimator
    classes, proba = clf.classes_, clf.predict_proba(ROWS)
    assert classes.tolist() == ["cool", "hot", "warm"]  # the ZipMap's keys, as declared
    assert got["heat"] == clf.predict(ROWS).tolist()
    for i, c in enumerate(classes):
        np.testing.assert_allclose(got[f"p_{c}"], proba[:, i], atol=ATOL, rtol=0)
    assert got["likeliest"] == classes[proba.argmax(axis=1)].tolist()
    np.testing.assert_allclose(got["likeliest_p"], proba.max(axis=1), atol=ATOL, rtol=0)
    top2 = np.argsort(-proba, axis=1)[:, :2]
    assert got["top2"] == classes[top2].tolist()
    np.testing.assert_allclose(
        got["top2_p"], np.take_along_axis(proba, top2, axis=1), atol=ATOL, rtol=0
    )
    # a threshold's labels are its own (here the default), not the three classes
    assert np.abs(proba[:, 1] - 0.5).min() > ATOL
    assert got["hot_alert"] == np.where(proba[:, 1] >= 0.5, "anomaly", "normal").tolist()


# ---- 2. int64 classes, plain tensors ----------------------------------------------------------

HEAT_INTS_OUTPUTS = """
[[outputs]]
field = "heat"
tensor = "label"
labels = ["cool", "warm", "hot"]

[[outputs]]
field = "heat_index"
tensor = "label"

[[outputs]]
field = "p"
tensor = "probabilities"
labels = ["cool", "warm", "hot"]
"""


def test_int64_classes_as_plain_tensors_take_the_declared_names(
    heat_ints: Exported, tmp_path: Path
) -> None:
    got = results(pipeline(tmp_path, heat_ints, HEAT_INTS_OUTPUTS))
    clf = heat_ints.estimator
    predicted, proba = clf.predict(ROWS), clf.predict_proba(ROWS)
    assert clf.classes_.tolist() == [0, 1, 2]
    assert got["heat"] == [HEAT[c] for c in predicted]
    assert got["heat_index"] == predicted.tolist()  # no labels: the int64 itself
    for i, name in enumerate(HEAT):
        np.testing.assert_allclose(got[f"p_{name}"], proba[:, i], atol=ATOL, rtol=0)


def test_softmax_of_raw_scores_gives_the_probabilities(models: Path, tmp_path: Path) -> None:
    raw = heat_classifier(models, string_classes=False, zipmap=False, raw_scores=True)
    outputs = """
[[outputs]]
field = "heat"
tensor = "label"
labels = ["cool", "warm", "hot"]

[[outputs]]
field = "p"
tensor = "probabilities"
post = "softmax"
labels = ["cool", "warm", "hot"]
"""
    got = results(pipeline(tmp_path, raw, outputs))
    clf = raw.estimator
    want = softmax(clf.decision_function(ROWS))
    assert got["heat"] == [HEAT[c] for c in clf.predict(ROWS)]
    for i, name in enumerate(HEAT):
        np.testing.assert_allclose(got[f"p_{name}"], want[:, i], atol=ATOL, rtol=0)
    # a multinomial logistic regression's probabilities are that softmax
    np.testing.assert_allclose(want, clf.predict_proba(ROWS), atol=1e-12, rtol=0)


# ---- 3. binary classifier, ZipMap, threshold --------------------------------------------------

OVERHEAT_OUTPUTS = """
[[outputs]]
field = "verdict"
tensor = "output_label"

[[outputs]]
field = "pager"
tensor = "output_probability"
post = "threshold"
column = 1
threshold = 0.3
labels = ["quiet", "call"]

[[outputs]]
field = "p"
tensor = "output_probability"
"""


def test_a_binary_zipmap_thresholded_on_the_positive_class(
    overheat: Exported, tmp_path: Path
) -> None:
    got = results(pipeline(tmp_path, overheat, OVERHEAT_OUTPUTS))
    clf = overheat.estimator
    p = clf.predict_proba(ROWS)[:, 1]
    assert clf.classes_.tolist() == ["ok", "overheat"]
    assert got["verdict"] == clf.predict(ROWS).tolist()
    np.testing.assert_allclose(got["p_overheat"], p, atol=ATOL, rtol=0)  # named by the keys
    np.testing.assert_allclose(got["p_ok"], 1 - p, atol=ATOL, rtol=0)
    clear = np.abs(p - 0.3) > ATOL  # rows float32 cannot put on the same side of 0.3
    assert clear.sum() >= len(ROWS) - 1
    want = np.where(p >= 0.3, "call", "quiet")
    assert np.asarray(got["pager"])[clear].tolist() == want[clear].tolist()
    assert {"call", "quiet"} == set(got["pager"])


# ---- 4. regressor -------------------------------------------------------------------------------


FAN_OUTPUTS = '\n[[outputs]]\nfield = "fan_rpm_needed"\ntensor = "variable"\n'


def test_a_regressor_gives_one_double_per_record(fan: Exported, tmp_path: Path) -> None:
    got = results(pipeline(tmp_path, fan, FAN_OUTPUTS))
    np.testing.assert_allclose(got["fan_rpm_needed"], fan.estimator.predict(ROWS), rtol=RTOL)


# ---- 5. LightGBM through onnxmltools ---------------------------------------------------------

LIGHTGBM_OUTPUTS = """
[[outputs]]
field = "heat"
tensor = "label"
labels = ["cool", "warm", "hot"]

[[outputs]]
field = "p"
tensor = "probabilities"
labels = ["cool", "warm", "hot"]

[[outputs]]
field = "likeliest"
tensor = "probabilities"
post = "argmax"
labels = ["cool", "warm", "hot"]
"""


@pytest.mark.parametrize("zipmap", [True, False], ids=["zipmap", "tensor"])
def test_a_lightgbm_classifier_gives_the_label_and_each_class_probability(
    zipmap: bool, models: Path, tmp_path: Path
) -> None:
    lgbm = heat_lightgbm(models, zipmap=zipmap)
    got = results(pipeline(tmp_path, lgbm, LIGHTGBM_OUTPUTS))
    clf = lgbm.estimator
    predicted, proba = clf.predict(ROWS), clf.predict_proba(ROWS)
    assert clf.classes_.tolist() == [0, 1, 2]
    assert got["heat"] == [HEAT[c] for c in predicted]
    assert got["likeliest"] == got["heat"]
    for i, name in enumerate(HEAT):
        np.testing.assert_allclose(got[f"p_{name}"], proba[:, i], atol=ATOL, rtol=0)


# ---- 6. streamflow validate: what does not fit, word for word --------------------------------

LABEL_ONLY = '\n[[outputs]]\nfield = "heat"\ntensor = "output_label"\n'
INTS_LABEL = '\n[[outputs]]\nfield = "heat"\ntensor = "label"\nlabels = ["cool", "warm", "hot"]\n'


def test_a_missing_input_is_named(heat_names: Exported, tmp_path: Path) -> None:
    s = pipeline(tmp_path, heat_names, HEAT_NAMES_OUTPUTS, input="readings")
    assert file_problems(s) == [
        f"model.input: 'readings' is not an input of {heat_names.path} (inputs: features)"
    ]
    with pytest.raises(ModelError, match="model.input: .* has no input 'readings'"):
        load_model(s)


def test_a_wrong_width_is_named(heat_names: Exported, tmp_path: Path) -> None:
    s = pipeline(tmp_path, heat_names, HEAT_NAMES_OUTPUTS, features=(*FEATURES, "fan_rpm"))
    assert file_problems(s) == [
        "features: 5 features configured take 5 columns but model input 'features' takes 4 "
        f"({heat_names.path})"
    ]


def test_a_double_input_is_named(models: Path, tmp_path: Path) -> None:
    double = double_input_classifier(models)
    outputs = INTS_LABEL + '\n[[outputs]]\nfield = "p"\ntensor = "probabilities"\n'
    s = pipeline(tmp_path, double, outputs)
    assert file_problems(s) == [
        "model.input: 'features' has type tensor(double); the pipeline feeds tensor(float)"
    ]


def test_an_output_nobody_maps_is_named(heat_names: Exported, tmp_path: Path) -> None:
    s = pipeline(tmp_path, heat_names, LABEL_ONLY)
    assert file_problems(s) == [
        "outputs: the model output 'output_probability' (seq(map(string,tensor(float)))) is "
        "mapped to no result field: add an [[outputs]] entry with tensor = 'output_probability' "
        "(post = identity keeps it as it is)"
    ]


def test_an_output_the_model_lacks_is_named(heat_names: Exported, tmp_path: Path) -> None:
    outputs = LABEL_ONLY + '\n[[outputs]]\nfield = "p"\ntensor = "probability"\n'
    s = pipeline(tmp_path, heat_names, outputs)
    assert file_problems(s) == [
        "outputs[1] (p).tensor: 'probability' is not an output of the model "
        "(outputs: output_label, output_probability)",
        "outputs: the model output 'output_probability' (seq(map(string,tensor(float)))) is "
        "mapped to no result field: add an [[outputs]] entry with tensor = 'output_probability' "
        "(post = identity keeps it as it is)",
    ]
    with pytest.raises(ModelError, match=r"model.outputs: .* has no output 'probability'"):
        load_model(s)


def test_argmax_of_a_scalar_is_named(fan: Exported, tmp_path: Path) -> None:
    outputs = '\n[[outputs]]\nfield = "fan"\ntensor = "variable"\npost = "argmax"\n'
    s = pipeline(tmp_path, fan, outputs)
    message = (
        "outputs[0] (fan).post: argmax needs one value per class ([batch, C]); "
        "variable is a scalar output"
    )
    assert file_problems(s) == [message]
    with pytest.raises(ModelError) as refused:
        load_model(s)
    assert str(refused.value) == f"{fan.path}: {message}"


def test_too_few_labels_for_a_vector_are_named(heat_ints: Exported, tmp_path: Path) -> None:
    outputs = INTS_LABEL + (
        '\n[[outputs]]\nfield = "p"\ntensor = "probabilities"\nlabels = ["cool", "hot"]\n'
    )
    s = pipeline(tmp_path, heat_ints, outputs)
    assert file_problems(s) == ["outputs[1] (p).labels: 2 labels for 3 columns of probabilities"]


def test_a_threshold_column_outside_the_tensor_is_named(
    heat_ints: Exported, tmp_path: Path
) -> None:
    outputs = HEAT_INTS_OUTPUTS + (
        '\n[[outputs]]\nfield = "alert"\ntensor = "probabilities"\npost = "threshold"\ncolumn = 3\n'
    )
    s = pipeline(tmp_path, heat_ints, outputs)
    assert file_problems(s) == [
        "outputs[3] (alert).column: 3 is not a column of probabilities (3 columns)"
    ]


def test_a_class_no_label_names_fails_only_its_record(heat_ints: Exported, tmp_path: Path) -> None:
    outputs = (
        '\n[[outputs]]\nfield = "heat"\ntensor = "label"\nlabels = ["cool", "warm"]\n'
        '\n[[outputs]]\nfield = "p"\ntensor = "probabilities"\n'
    )
    s = pipeline(tmp_path, heat_ints, outputs)
    assert file_problems(s) == []  # the signature does not say which classes come out
    model = load_model(s)
    scored, errors = score_rows(model, ROWS, max_batch=len(ROWS))
    predicted = heat_ints.estimator.predict(ROWS)
    hot = np.flatnonzero(predicted == 2)
    assert 0 < len(hot) < len(ROWS)
    assert sorted(errors) == hot.tolist()  # dead-lettered; the other records are scored
    rest = predicted != 2
    assert scored["label"][rest].tolist() == predicted[rest].tolist()
    assert errors[hot[0]] == (
        "model shapes failed on this record: ModelError: outputs[0] (heat).labels: label gave "
        "class 2; the 2 labels name classes 0..1"
    )


def test_labels_other_than_a_zipmaps_classes_are_named(
    heat_names: Exported, tmp_path: Path
) -> None:
    outputs = LABEL_ONLY + (
        '\n[[outputs]]\nfield = "p"\ntensor = "output_probability"\n'
        'labels = ["cold", "hot", "warm"]\n'
    )
    s = pipeline(tmp_path, heat_names, outputs)
    message = (
        "outputs[1] (p).labels: ['cold', 'hot', 'warm'] differ from the classes of "
        "output_probability: ['cool', 'hot', 'warm']"
    )
    assert file_problems(s) == [message]
    with pytest.raises(ModelError) as refused:  # the worker refuses to start, before any record
        load_model(s)
    assert str(refused.value) == f"{heat_names.path}: {message}"


@pytest.mark.parametrize("shape", ["heat_names", "heat_ints", "overheat", "fan", "lightgbm"])
def test_validate_passes_each_shape_as_declared(
    shape: str, request: pytest.FixtureRequest, models: Path, tmp_path: Path
) -> None:
    """``streamflow validate`` on the pipelines above: nothing to say."""
    outputs = {
        "heat_names": HEAT_NAMES_OUTPUTS,
        "heat_ints": HEAT_INTS_OUTPUTS,
        "overheat": OVERHEAT_OUTPUTS,
        "fan": FAN_OUTPUTS,
        "lightgbm": LIGHTGBM_OUTPUTS,
    }
    model = heat_lightgbm(models) if shape == "lightgbm" else request.getfixturevalue(shape)
    pipeline(tmp_path, model, outputs[shape])
    assert validate(str(tmp_path / "pipeline.toml")) == []


# ---- 7. the generated result schema -----------------------------------------------------------

EVERY_FIELD_TYPE = (
    HEAT_INTS_OUTPUTS
    + """
[[outputs]]
field = "raw"
tensor = "probabilities"

[[outputs]]
field = "likeliest"
tensor = "probabilities"
post = "argmax"
labels = ["cool", "warm", "hot"]
score_field = "likeliest_p"

[[outputs]]
field = "top2"
tensor = "probabilities"
post = "top_k"
k = 2
labels = ["cool", "warm", "hot"]
score_field = "top2_p"

[[outputs]]
field = "hot_alert"
tensor = "probabilities"
post = "threshold"
column = 2
threshold = 0.5
"""
)


def plain(schema: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """Each field's name and type, its docs dropped."""
    for f in schema["fields"]:
        yield f["name"], f["type"]


def test_the_generated_schema_holds_the_declared_fields_in_order(
    heat_ints: Exported, tmp_path: Path
) -> None:
    s = pipeline(tmp_path, heat_ints, EVERY_FIELD_TYPE)
    assert list(plain(generated_schema(s))) == [
        ("device_id", "string"),
        ("timestamp", {"type": "long", "logicalType": "timestamp-millis"}),
        ("heat", "string"),
        ("heat_index", "long"),
        ("p_cool", "double"),
        ("p_warm", "double"),
        ("p_hot", "double"),
        ("raw", {"type": "array", "items": "float"}),
        ("likeliest", "string"),
        ("likeliest_p", "double"),
        ("top2", {"type": "array", "items": "string"}),
        ("top2_p", {"type": "array", "items": "double"}),
        ("hot_alert", "string"),
        ("model_name", "string"),
        ("model_version", "string"),
        ("latency_ms", "double"),
    ]
    got = results(s, ROWS[:5])
    proba = heat_ints.estimator.predict_proba(ROWS[:5])
    np.testing.assert_allclose(got["raw"], proba, atol=ATOL, rtol=0)
    assert got["hot_alert"] == np.where(proba[:, 2] >= 0.5, "anomaly", "normal").tolist()
