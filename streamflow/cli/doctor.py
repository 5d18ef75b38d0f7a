"""``streamflow doctor``: what this host can run, and how fast, before a worker is started on it.

Prints the ONNX Runtime build and its providers, the GPUs NVML sees, which provider the
pipeline's ``runtime.device`` would pick here, and for the model: its inputs and outputs
and a quick timing at batch 1 and at ``batching.max_batch`` on the provider it really got.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, TextIO

import numpy as np

from streamflow.cli import load, settings_args
from streamflow.errors import StreamflowError
from streamflow.inference.gpu import Gpus
from streamflow.inference.session import _ort, candidate_providers, load_model
from streamflow.settings import Settings


def _shape(arg: Any) -> str:
    return "[" + ", ".join(str(d) for d in arg.shape) + f"] {arg.type}"


def time_batches(
    run: Any, n_features: int, sizes: list[int], seconds: float = 0.5
) -> dict[int, float]:
    """Records/s of ``run`` at each batch size (median of repeated calls within ~``seconds``)."""
    out: dict[int, float] = {}
    rng = np.random.default_rng(0)
    for n in sizes:
        x = rng.normal(size=(n, n_features)).astype(np.float32)
        run(x)  # warm-up: first-call allocations, TensorRT engine build
        times: list[float] = []
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline or len(times) < 3:
            t0 = time.perf_counter()
            run(x)
            times.append(time.perf_counter() - t0)
        out[n] = n / float(np.median(times))
    return out


def doctor(settings: Settings, out: TextIO) -> int:
    """Print the report; 0 when the pipeline's model loads on what its settings ask for."""
    ort = _ort()
    available = list(ort.get_available_providers())
    print(f"onnxruntime {ort.__version__} ({ort.get_device()} build)", file=out)
    print(f"  providers available: {', '.join(available)}", file=out)
    gpus = Gpus.open()
    samples = gpus.sample()
    if samples:
        for g in samples:
            print(
                f"  GPU {g.index}: {g.name}, {g.memory_used_bytes / 2**30:.1f} of "
                f"{g.memory_total_bytes / 2**30:.1f} GiB used, {g.utilization:.0%} busy",
                file=out,
            )
    else:
        print(
            "  GPUs: none seen (no NVIDIA driver, no device, or nvidia-ml-py not installed)",
            file=out,
        )
    device = settings.runtime.device
    try:
        wanted = candidate_providers(device, available)
    except StreamflowError as exc:
        print(f"runtime.device = {device!r}: {exc}", file=out)
        return 1
    print(f"runtime.device = {device!r}: would try {', '.join(wanted)}", file=out)
    try:
        model = load_model(settings)
    except StreamflowError as exc:
        print(f"model {settings.model.path}: cannot load: {exc}", file=out)
        return 1
    session = model.session
    print(
        f"model {model.name} {model.version} ({model.path}, sha256 {model.sha256[:12]}) "
        f"on {model.provider}{' with IO binding' if model.io_binding else ''}",
        file=out,
    )
    for arg in session.get_inputs():
        print(f"  input  {arg.name} {_shape(arg)}", file=out)
    for arg in session.get_outputs():
        print(f"  output {arg.name} {_shape(arg)}", file=out)
    sizes = sorted({1, min(64, settings.batching.max_batch), settings.batching.max_batch})
    for n, rate in time_batches(model.run, model.n_features, sizes).items():
        print(
            f"  batch {n:>5}: {rate:>12,.0f} records/s  ({n / rate * 1000:.3f} ms per call)",
            file=out,
        )
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Declare ``streamflow doctor``."""
    dr = sub.add_parser(
        "doctor",
        help="ONNX Runtime build, providers, GPUs, the model's inputs/outputs and a quick timing",
    )
    settings_args(dr)
    dr.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the report on stdout (see ``doctor``)."""
    return doctor(load(args), sys.stdout)
