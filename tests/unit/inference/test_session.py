import numpy as np
import pytest

from streamflow.errors import ModelError
from streamflow.inference.session import candidate_providers

CPU_ONLY = ["CPUExecutionProvider"]
GPU_BUILD = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


def test_auto_prefers_tensorrt_then_cuda_then_cpu() -> None:
    assert candidate_providers("auto", GPU_BUILD) == GPU_BUILD
    assert candidate_providers("auto", ["CUDAExecutionProvider", "CPUExecutionProvider"]) == [
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    assert candidate_providers("auto", CPU_ONLY) == CPU_ONLY


def test_cpu_never_uses_a_gpu() -> None:
    assert candidate_providers("cpu", GPU_BUILD) == CPU_ONLY


@pytest.mark.parametrize("device", ["cuda", "tensorrt"])
def test_demanding_a_gpu_on_a_cpu_build_refuses_to_start(device: str) -> None:
    with pytest.raises(
        ModelError, match=f"runtime.device = '{device}' but this ONNX Runtime build has no"
    ):
        candidate_providers(device, CPU_ONLY)


def test_the_installed_build_runs_the_shipped_model_on_what_it_has() -> None:
    import onnxruntime as ort

    from streamflow.inference.session import load_model
    from streamflow.settings.loading import load_settings
    from tests.conftest import PIPELINE

    model = load_model(load_settings(PIPELINE, environ={}))
    assert model.provider in ort.get_available_providers()
    assert model.name == "telemetry-anomaly" and len(model.sha256) == 64
    scores = model.run(np.zeros((3, 16), dtype=np.float32))
    assert scores.shape == (3,) and np.all((scores >= 0) & (scores <= 1))


def test_a_pinned_sha256_that_does_not_match_refuses_to_start() -> None:
    from streamflow.inference.session import load_model
    from streamflow.settings.loading import load_settings
    from tests.conftest import PIPELINE

    s = load_settings(PIPELINE, {"model.sha256": "0" * 64}, environ={})
    with pytest.raises(
        ModelError, match="model.sha256: .* has sha256 [0-9a-f]{64}, the pipeline pins 0{64}"
    ):
        load_model(s)


def test_gpu_providers_get_the_device_the_engine_cache_and_fp16_from_the_pipeline(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from streamflow.inference.session import provider_options
    from streamflow.settings.loading import load_settings
    from tests.conftest import PIPELINE

    s = load_settings(
        PIPELINE,
        {"runtime.device_id": "1", "runtime.fp16": "true", "runtime.trt_cache_dir": str(tmp_path)},
        environ={},
    )
    opts = dict(
        provider_options(
            s, ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
        )
    )
    assert opts["TensorrtExecutionProvider"]["device_id"] == 1
    assert opts["TensorrtExecutionProvider"]["trt_fp16_enable"] is True
    assert opts["TensorrtExecutionProvider"]["trt_engine_cache_path"] == str(tmp_path)
    assert opts["CUDAExecutionProvider"]["device_id"] == 1
    assert opts["CPUExecutionProvider"] == {}


def test_io_binding_scores_exactly_like_a_plain_run() -> None:
    """The bound path is what a GPU uses by default; on the CPU it must give the same scores."""
    from streamflow.inference.session import load_model
    from streamflow.settings.loading import load_settings
    from tests.conftest import PIPELINE

    plain = load_model(load_settings(PIPELINE, {"runtime.io_binding": "off"}, environ={}))
    bound = load_model(load_settings(PIPELINE, {"runtime.io_binding": "on"}, environ={}))
    assert bound.io_binding and not plain.io_binding
    x = np.random.default_rng(0).normal(size=(257, plain.n_features)).astype(np.float32)
    np.testing.assert_array_equal(bound.run(x), plain.run(x))
