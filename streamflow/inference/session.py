"""The ONNX Runtime session: provider selection, loading, pinning, and batched runs."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from streamflow.errors import ConfigError, ModelError
from streamflow.inference.kinds import ModelKind, Outputs, kind_for
from streamflow.settings import Settings

log = logging.getLogger(__name__)

PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
DEVICE_PROVIDERS = {
    "auto": PREFERENCE,
    "tensorrt": ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
    "cuda": ("CUDAExecutionProvider", "CPUExecutionProvider"),
    "cpu": ("CPUExecutionProvider",),
}
GPU_PROVIDERS = {"TensorrtExecutionProvider", "CUDAExecutionProvider"}


def _ort() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise ConfigError(
            "ONNX Runtime is not installed: pip install 'streamflow-inference[cpu]' "
            "(or [gpu] on a GPU host)"
        ) from None
    return onnxruntime


def sha256_of(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def candidate_providers(device: str, available: list[str]) -> list[str]:
    """The providers to try for ``device``, best first, among those this ONNX Runtime build has.

    ``cuda`` and ``tensorrt`` demand a GPU: when the build lacks the provider this raises,
    rather than falling back to the CPU without telling anyone.
    """
    wanted = DEVICE_PROVIDERS[device]
    if device in ("cuda", "tensorrt"):
        first = "CUDAExecutionProvider" if device == "cuda" else "TensorrtExecutionProvider"
        if first not in available:
            raise ModelError(
                f"runtime.device = {device!r} but this ONNX Runtime build has no {first} "
                f"(available: {', '.join(available)}). Install the gpu extra on a GPU host, "
                "or set runtime.device = 'auto' or 'cpu'."
            )
    return [p for p in wanted if p in available]


def provider_options(settings: Settings, providers: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """Each provider with its options from ``[runtime]``: the GPU, TensorRT's engine cache and
    FP16."""
    r = settings.runtime
    out: list[tuple[str, dict[str, Any]]] = []
    for name in providers:
        if name == "TensorrtExecutionProvider":
            cache = r.trt_cache_dir or str(Path.home() / ".cache" / "streamflow" / "tensorrt")
            out.append(
                (
                    name,
                    {
                        "device_id": r.device_id,
                        "trt_engine_cache_enable": True,
                        "trt_engine_cache_path": cache,
                        "trt_timing_cache_enable": True,
                        "trt_timing_cache_path": cache,
                        "trt_fp16_enable": r.fp16,
                    },
                )
            )
        elif name == "CUDAExecutionProvider":
            out.append(
                (
                    name,
                    {
                        "device_id": r.device_id,
                        "cudnn_conv_algo_search": "HEURISTIC",
                        "arena_extend_strategy": "kSameAsRequested",
                    },
                )
            )
        else:
            out.append((name, {}))
    return out


@dataclass
class LoadedModel:
    session: Any
    name: str
    version: str
    sha256: str
    path: str
    provider: str
    input_name: str
    output_names: list[str]
    n_features: int
    io_binding: bool = False
    device_id: int = 0
    kind: ModelKind | None = (
        None  # how it is fed and what comes out (None: one float input, a score)
    )
    head: Any = None  # what the kind's results need besides the outputs (text: the label centroids)

    def run_all(self, x: np.ndarray) -> Outputs:
        """Every output the kind reads, by name, one row per row of the model-ready features
        ``x`` (float32[n, F]): scores, probabilities, labels, or an embedding."""
        feeds = self.kind.feeds(x) if self.kind is not None else {self.input_name: x}
        if self.io_binding:
            raws = self._run_bound(feeds)
        else:
            raws = self.session.run(self.output_names, feeds)
        if self.kind is not None:
            return self.kind.outputs(raws, x)
        return {self.output_names[0]: np.asarray(raws[0], np.float64).reshape(len(x), -1)[:, 0]}

    def run(self, x: np.ndarray) -> np.ndarray:
        """The first of ``run_all``'s outputs: a score (float64[n]) or an embedding
        (float32[n, D]), as the kind says."""
        return next(iter(self.run_all(x).values()))

    def _run_bound(self, feeds: dict[str, np.ndarray]) -> list[Any]:
        """With IO binding: the inputs are copied once to the provider's device and the outputs
        allocated there, then copied back in one piece (no per-run staging by ORT)."""
        device = "cuda" if self.provider in GPU_PROVIDERS else "cpu"
        binding = self.session.io_binding()
        for name, x in feeds.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(x))
        for name in self.output_names:
            binding.bind_output(name, device, self.device_id if device == "cuda" else 0)
        self.session.run_with_iobinding(binding)
        return [np.asarray(o) for o in binding.copy_outputs_to_cpu()]


def load_model(settings: Settings) -> LoadedModel:
    ort = _ort()
    m = settings.model
    digest = sha256_of(m.path)
    if m.sha256 and digest != m.sha256.lower():
        raise ModelError(
            f"model.sha256: {m.path} has sha256 {digest}, the pipeline pins {m.sha256}; "
            "refusing to start"
        )
    available = list(ort.get_available_providers())
    providers = candidate_providers(settings.runtime.device, available)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = settings.runtime.intra_op_threads
    opts.inter_op_num_threads = settings.runtime.inter_op_threads
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    try:
        session = ort.InferenceSession(
            m.path, sess_options=opts, providers=provider_options(settings, providers)
        )
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph/... types
        raise ModelError(f"model.path: cannot load {m.path}: {exc}") from exc
    active = session.get_providers()
    if settings.runtime.device in ("cuda", "tensorrt") and not GPU_PROVIDERS & set(active):
        raise ModelError(
            f"runtime.device = {settings.runtime.device!r} but the session runs on {active[0]} "
            "(the GPU provider failed to initialise; see ONNX Runtime's log)"
        )
    meta = session.get_modelmeta().custom_metadata_map
    inputs = {i.name: i for i in session.get_inputs()}
    kind = kind_for(settings)
    for name in kind.input_names:
        if name not in inputs:
            key = "model.input" if name == m.input else "model.kind"
            raise ModelError(f"{key}: {m.path} has no input {name!r} (inputs: {', '.join(inputs)})")
    out_types = {o.name: o.type for o in session.get_outputs()}
    for name in kind.output_names:
        if name not in out_types:
            raise ModelError(
                f"model.outputs: {m.path} has no output {name!r} (outputs: {', '.join(out_types)})"
            )
    shape = inputs[m.input].shape if m.input in inputs else []
    n_features = shape[-1] if shape and isinstance(shape[-1], int) else settings.model_width
    loaded = LoadedModel(
        session=session,
        name=m.name or meta.get("name", Path(m.path).stem),
        version=m.version or meta.get("version", "0"),
        sha256=digest,
        path=m.path,
        provider=active[0],
        input_name=m.input,
        output_names=list(kind.output_names),
        n_features=n_features,
        # IO binding takes tensors only (a ZipMap's sequence of maps is no tensor)
        io_binding=all(out_types.get(o, "").startswith("tensor(") for o in kind.output_names)
        and (
            settings.runtime.io_binding == "on"
            or (settings.runtime.io_binding == "auto" and active[0] in GPU_PROVIDERS)
        ),
        device_id=settings.runtime.device_id,
        kind=kind,
    )
    kind.start(loaded)
    log.info(
        "model %s %s (sha256 %s) on %s%s; providers tried %s, available %s",
        loaded.name,
        loaded.version,
        digest[:12],
        loaded.provider,
        " with IO binding" if loaded.io_binding else "",
        providers,
        available,
    )
    return loaded
