"""User transforms: loaded naming the key, applied over columns, poison rows found by bisection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streamflow.errors import ConfigError
from streamflow.records import BytesColumn, ReasonCode, RecordBatch
from streamflow.settings.loading import collect_settings
from streamflow.stages.transforms import Transform, apply, load_function, transform_batch
from tests.conftest import PIPELINE, ROOT

MOD = "tests.unit.stages.user_transforms"
NAMES = [("cpu_temp_c", 1), ("power_w", 1)]  # the layout: (feature, columns)


def batch(temps: list[float]) -> RecordBatch:
    n = len(temps)
    return RecordBatch(
        "raw", 0, np.arange(n, dtype=np.int64), np.zeros(n, np.int64),
        BytesColumn.from_list([b"k"] * n), BytesColumn.from_list([b"v"] * n),
        BytesColumn.from_list([f"d{i}".encode() for i in range(n)]), np.arange(n, dtype=np.int64),
        np.array([[t, 100.0 + i] for i, t in enumerate(temps)], dtype=np.float32),
    )  # fmt: skip


def t(name: str) -> Transform:
    return Transform.load(f"{MOD}:{name}", "after_clean", "", "transforms[0].function")


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("no_colon", "expected 'module:name'"),
        ("no_such_module_xyz:f", "cannot import module 'no_such_module_xyz'"),
        (f"{MOD}:missing", f"module '{MOD}' has no attribute 'missing'"),
        (f"{MOD}:two_arguments", "must take exactly one argument"),
    ],
)
def test_a_function_that_cannot_be_used_fails_naming_the_key(spec: str, expected: str) -> None:
    with pytest.raises(ConfigError, match="transforms.0..function: ") as exc:
        load_function(spec, "transforms[0].function")
    assert expected in str(exc.value)


def test_columns_come_back_changed_and_reasons_refuse_rows() -> None:
    b = batch([50.0, 95.0, 60.0])
    done = transform_batch([t("double_power"), t("refuse_hot")], b, NAMES)
    assert done.bad_rows == [1] and done.reasons[0].code is ReasonCode.TRANSFORM_REJECTED
    assert done.reasons[0].text == "transform refuse_hot: too hot to score"
    assert done.batch.offsets.tolist() == [0, 2]
    assert done.batch.features[:, 1].tolist() == [200.0, 204.0]  # doubled, row 1 gone


def test_a_raising_transform_loses_only_its_poison_rows_found_by_bisection() -> None:
    temps = [50.0 + i for i in range(64)]
    temps[5] = temps[40] = 66.6
    done = transform_batch([t("poison")], batch(temps), NAMES)
    assert done.bad_rows == [5, 40]
    assert all(r.code is ReasonCode.TRANSFORM_ERROR for r in done.reasons)
    assert done.reasons[0].text == "transform poison raised ValueError: 66.6 is cursed"
    assert len(done.batch) == 62 and 5 not in done.batch.offsets.tolist()


def test_a_wrong_shape_fails_every_row_with_the_reason() -> None:
    done = transform_batch([t("wrong_shape")], batch([50.0, 51.0]), NAMES)
    assert done.bad_rows == [0, 1] and not len(done.batch)
    assert "returned column 'power_w' of shape (2,), not (1,)" in done.reasons[0].text


def test_after_the_model_the_outputs_are_a_column() -> None:
    b = batch([50.0, 51.0])
    done = transform_batch([t("halve_score")], b, NAMES, {"score": np.array([0.8, 0.4])})
    assert done.outputs is not None and done.outputs["score"].tolist() == [0.4, 0.2]


def test_apply_on_plain_columns_reports_rows_not_exceptions() -> None:
    def cursed(c: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if 66.6 in c["cpu_temp_c"]:
            raise RuntimeError("x")
        return {}

    done = apply(cursed, "f", {"cpu_temp_c": np.array([1.0, 66.6, 3.0])}, 3)
    assert list(done.failed) == [1] and done.failed[1] == "transform f raised RuntimeError: x"


def test_the_pipeline_file_names_the_transform_key(tmp_path: Path) -> None:
    text = PIPELINE.read_text().replace('"../', f'"{ROOT}/')
    path = tmp_path / "p.toml"
    path.write_text(text + '\n[[transforms]]\nfunction = "nowhere_xyz:f"\nat = "after_clean"\n')
    problems = collect_settings(path, environ={})[1]
    assert any(p.startswith("transforms[0].function: cannot import module") for p in problems)
    path.write_text(text + f'\n[[transforms]]\nfunction = "{MOD}:double_power"\nat = "later"\n')
    problems = collect_settings(path, environ={})[1]
    assert any(p.startswith("transforms[0].at: must be one of after_clean") for p in problems)
    (tmp_path / "beside.py").write_text("def f(cols):\n    return {}\n")
    path.write_text(text + '\n[[transforms]]\nfunction = "beside:f"\n')
    assert collect_settings(path, environ={})[1] == []  # a module beside the pipeline file
