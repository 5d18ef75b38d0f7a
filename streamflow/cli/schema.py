"""``streamflow schema result``: the Avro schema of the pipeline's result record, generated from
its declaration (``[[outputs]]``, ``[result]``) and the model's outputs.

Results are written with ``output.schema`` when the pipeline names one (``streamflow validate``
checks it against the declaration), else with this generated schema.
"""

from __future__ import annotations

import argparse
import json

from streamflow.settings import Settings


def generated_schema(settings: Settings) -> dict[str, object]:
    """The result schema the declaration makes, with the model loaded on the CPU (its outputs
    decide the fields: a ZipMap's classes, a label's type)."""
    from streamflow.inference.kinds import declared_record
    from streamflow.inference.outputs import result_schema
    from streamflow.inference.session import load_model
    from streamflow.settings import with_overrides

    model = load_model(with_overrides(settings, runtime={"device": "cpu"}))
    assert model.kind is not None
    return result_schema(settings, declared_record(settings, model.kind.output_fields()))


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Declare ``streamflow schema result``."""
    from streamflow.cli import settings_args

    sc = sub.add_parser("schema", help="print the Avro schema of the pipeline's result record")
    sc.add_argument("which", choices=["result"], help="result: the records on the sink topic")
    settings_args(sc)
    sc.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from streamflow.cli import load

    print(json.dumps(generated_schema(load(args)), indent=2))
    return 0
