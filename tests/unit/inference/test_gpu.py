"""The NVML monitor (streamflow/inference/gpu.py): no GPU here, so NVML itself is faked for the
mapping."""

from __future__ import annotations

from types import SimpleNamespace

from streamflow.inference.gpu import Gpus, GpuSample


def test_without_nvml_or_a_gpu_the_monitor_sees_no_device() -> None:
    gpus = Gpus.open()  # this machine: no NVIDIA driver (and nvidia-ml-py only in the gpu extra)
    assert len(gpus) == 0 and gpus.sample() == []


def test_samples_map_nvml_readings_and_skip_a_device_that_fails() -> None:
    class FakeNvml:
        def nvmlDeviceGetUtilizationRates(self, h: int) -> SimpleNamespace:
            if h == 1:
                raise RuntimeError("GPU is lost")
            return SimpleNamespace(gpu=87, memory=40)

        def nvmlDeviceGetMemoryInfo(self, h: int) -> SimpleNamespace:
            return SimpleNamespace(used=3 << 30, total=80 << 30, free=77 << 30)

        def nvmlDeviceGetName(self, h: int) -> bytes:
            return b"NVIDIA H100 80GB HBM3"

    gpus = Gpus(FakeNvml(), [0, 1])
    assert len(gpus) == 2
    assert gpus.sample() == [GpuSample(0, "NVIDIA H100 80GB HBM3", 0.87, 3 << 30, 80 << 30)]
