"""The result record's schema as the pipeline declares it, for the model it runs."""

from __future__ import annotations

from typing import Any

from streamflow.settings import Settings, with_overrides


def generated_schema(settings: Settings) -> dict[str, Any]:
    """The result schema the declaration makes, with the model loaded on the CPU (its outputs
    decide the fields: a ZipMap's classes, a label's type)."""
    from streamflow.inference.kinds import declared_record
    from streamflow.inference.outputs import result_schema
    from streamflow.inference.session import load_model

    model = load_model(with_overrides(settings, runtime={"device": "cpu"}))
    assert model.kind is not None
    return result_schema(settings, declared_record(settings, model.kind.output_fields()))
