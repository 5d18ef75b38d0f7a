"""``streamflow model export minilm``: build an ONNX model from locally installed weights."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Declare ``streamflow model export WHICH [--out DIR] [--force]``."""
    mo = sub.add_parser(
        "model", help="build models from local weights (the demo's anomaly model: make model)"
    )
    msub = mo.add_subparsers(dest="action", required=True)
    me = msub.add_parser(
        "export", help="write an ONNX model, checked against a reference, into a cache folder"
    )
    me.add_argument(
        "which",
        choices=["minilm"],
        help="minilm: all-MiniLM-L6-v2 sentence embeddings (text extra)",
    )
    me.add_argument(
        "--out",
        default=None,
        help="the folder (default: models/minilm beside the pipelines/ folder that "
        "pipelines/text.toml is found in: here, else the installed examples)",
    )
    me.add_argument(
        "--force", action="store_true", help="build again even when an up-to-date export is there"
    )
    me.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Export the model (or find the export up to date) and describe it."""
    from streamflow.model import minilm  # the text extra
    from streamflow.resources import find_pipeline

    # where pipelines/text.toml (model.path = "../models/minilm/model.onnx") will look for it
    out = args.out or Path(find_pipeline("pipelines/text.toml")).parent.parent / "models" / "minilm"
    for line in minilm.describe(minilm.export(out, force=args.force)):
        print(line)
    return 0
