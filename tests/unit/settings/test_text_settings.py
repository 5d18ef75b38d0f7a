"""A text pipeline's settings: model.kind, the text field, the labels, checked at start-up
naming the key."""

from __future__ import annotations

from pathlib import Path

from streamflow.cli.validate import validate
from streamflow.settings.loading import collect_settings, load_settings

ROOT = Path(__file__).resolve().parents[3]
TEXT = ROOT / "pipelines" / "text.toml"


def problems(text: str, tmp_path: Path) -> list[str]:
    path = tmp_path / "p.toml"
    path.write_text(text)
    return collect_settings(path, environ={})[1]


def test_the_shipped_text_pipeline_loads_and_the_telemetry_one_stays_tabular() -> None:
    s = load_settings(TEXT, environ={})
    assert s.model.kind == "text-embedding" and s.input.text_field == "text" and not s.features
    assert [name for name, _ in s.labels] == ["overheating", "disk", "network", "other"]
    assert load_settings(ROOT / "pipelines" / "telemetry.toml", environ={}).model.kind == "tabular"


def test_text_settings_are_checked_naming_the_key(tmp_path: Path) -> None:
    base = TEXT.read_text().replace('"../', f'"{ROOT}/')
    found = problems(base.replace('kind = "text-embedding"', 'kind = "text"'), tmp_path)
    assert any(p.startswith("model.kind: must be one of tabular, text-embedding") for p in found), (
        found
    )
    found = problems(base.replace("max_tokens = 256", "max_tokens = 1024"), tmp_path)
    assert any(p.startswith("model.max_tokens") for p in found), found
    one_label = base[: base.index("disk = [")] + base[base.index("[batching]") :]
    assert any(
        p.startswith("labels: model.kind = text-embedding needs at least two labels")
        for p in problems(one_label, tmp_path)
    )
    blank_other = (
        base[: base.index("other = [")] + 'other = ["  "]\n\n' + base[base.index("[batching]") :]
    )
    found = problems(blank_other, tmp_path)
    assert any(p.startswith("labels.other: expected a non-empty list") for p in found), found
    found = problems(base.replace("tokenizer.json", "missing.json"), tmp_path)
    assert any(p.startswith("model.tokenizer: file not found") for p in found), found


def test_validate_checks_the_text_field_and_the_model_inputs(tmp_path: Path) -> None:
    assert validate(str(TEXT)) == []
    base = TEXT.read_text().replace('"../', f'"{ROOT}/')
    path = tmp_path / "p.toml"
    path.write_text(base.replace('text_field = "text"', 'text_field = "timestamp"'))
    assert any(
        p.startswith("input.text_field: 'timestamp' must be a string") for p in validate(str(path))
    )
    path.write_text(base.replace("minilm/model.onnx", "telemetry-anomaly/model.onnx"))
    found = validate(str(path))
    assert any("a text-embedding model takes input 'input_ids'" in p for p in found), found
