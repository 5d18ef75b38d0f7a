"""What the NVIDIA GPUs of this host are doing, through NVML (the ``nvidia-ml-py`` package).

Optional: without the package, the driver or a GPU, ``Gpus.open()`` returns a monitor that
sees zero devices, and nothing else changes. The inference stages sample it with their lag
timer and export ``streamflow_gpus``, ``streamflow_gpu_utilization_ratio`` and the memory
gauges; ``streamflow doctor`` prints the same.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GpuSample:
    index: int
    name: str
    utilization: float  # 0..1, busy time over the driver's last sample period
    memory_used_bytes: int
    memory_total_bytes: int


class Gpus:
    def __init__(self, nvml: Any, handles: list[Any]) -> None:
        self._nvml, self._handles = nvml, handles

    @classmethod
    def open(cls) -> Gpus:
        try:
            import pynvml  # nvidia-ml-py

            pynvml.nvmlInit()
            handles = [
                pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())
            ]
        except Exception as exc:  # no package, no driver, no device: all mean "no GPU here"
            log.debug("NVML unavailable: %r", exc)
            return cls(None, [])
        return cls(pynvml, handles)

    def __len__(self) -> int:
        return len(self._handles)

    def sample(self) -> list[GpuSample]:
        out = []
        nvml = self._nvml
        for i, h in enumerate(self._handles):
            try:
                util = nvml.nvmlDeviceGetUtilizationRates(h)
                mem = nvml.nvmlDeviceGetMemoryInfo(h)
                name = nvml.nvmlDeviceGetName(h)
            except Exception as exc:  # a device that went away mid-run: report the others
                log.warning("NVML: cannot read GPU %d: %r", i, exc)
                continue
            out.append(
                GpuSample(
                    i,
                    name.decode() if isinstance(name, bytes) else str(name),
                    util.gpu / 100.0,
                    int(mem.used),
                    int(mem.total),
                )
            )
        return out
