"""docs/configuration.md is rendered from the settings schema and cannot drift from it."""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Literal

import pytest

from streamflow.settings import reference
from streamflow.settings.reference import describe, render, type_text
from streamflow.settings.schema import SECTIONS, FeatureSpec, Secret
from tests.conftest import ROOT

DOC = ROOT / "docs" / "configuration.md"


@dataclass(frozen=True)
class _Example:
    """A section added later."""

    plain: str = ""
    # a comment above the field,
    # on two lines
    above: int = 3
    beside: float = 0.5  # a comment after it
    # both
    both: Literal["a", "b"] = "a"  # and more
    secret: Secret = Secret()

    unlisted: bool = True


def _sections(text: str) -> dict[str, str]:
    """Each ``## heading`` of the reference and the text under it."""
    parts = re.split(r"^## (.+)$", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_the_committed_reference_is_what_the_schema_renders() -> None:
    assert DOC.read_text() == render(), "docs/configuration.md is stale: run make docs"


def test_every_section_and_every_field_has_its_row() -> None:
    sections = _sections(render())
    for name, cls in SECTIONS.items():
        body = sections[f"[{name}]"]
        assert f"STREAMFLOW_{name.upper()}_<KEY>" in body
        for f in fields(cls):
            assert f"| `{f.name}` |" in body, f"{name}.{f.name}"
    for table in ("[[features]]", "[[outputs]]", "[[transforms]]", "[labels]"):
        assert table in sections
    assert all(f"| `{f.name}` |" in sections["[[features]]"] for f in fields(FeatureSpec))


def test_descriptions_are_the_comments_above_and_beside_a_field() -> None:
    doc = describe(_Example)
    assert doc.doc == "A section added later."
    assert doc.comments == {
        "plain": "",
        "above": "a comment above the field, on two lines",
        "beside": "a comment after it",
        "both": "both and more",
        "secret": "",
        "unlisted": "",
    }


def test_a_new_section_is_rendered_without_changes_here(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reference, "SECTIONS", {**SECTIONS, "example": _Example})
    body = _sections(render())["[example]"]
    assert "A section added later." in body
    assert "| `above` | `integer` | `3` | a comment above the field, on two lines |" in body
    assert '| `both` | `a \\| b` | `"a"` | both and more |' in body
    assert '| `secret` | `secret (masked)` | `""` |  |' in body


def test_types_read_as_a_user_writes_them() -> None:
    assert type_text(Literal["avro", "json", "auto"]) == "avro | json | auto"
    assert type_text(Literal["", "PLAIN"]) == '"" | PLAIN'
    assert type_text(tuple[int, ...]) == "list of integers"
    assert type_text(float | None) == "number"
    assert type_text(Secret) == "secret (masked)"
    assert type_text(str, path=True) == "path"
