"""``streamflow schema result``: the Avro schema of the pipeline's result record, generated from
its declaration (``[[outputs]]``, ``[result]``) and the model's outputs.

Results are written with ``output.schema`` when the pipeline names one (``streamflow validate``
checks it against the declaration), else with this generated schema.
"""

from __future__ import annotations

import argparse
import json

from streamflow.inference.record import generated_schema

__all__ = ["generated_schema", "add_parser", "run"]


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
