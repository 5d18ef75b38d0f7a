"""How long the inference stage waits for a batch to fill: adapted to the pipeline's latency SLO.

A longer wait makes larger batches (a GPU's throughput grows with the batch) and adds that
wait to every record's latency. With ``batching.adapt_to_slo`` the stage measures the
end-to-end latency of what it delivers and steers its wait within ``[0, max_delay_ms]``:
while the recent p99 is well under ``slo.p99_latency_ms`` the wait grows (bigger batches),
as the p99 nears the objective it shrinks fast (multiplicative decrease, additive-ish
increase, like TCP's congestion window). Exported: ``streamflow_batch_wait_seconds`` and
``streamflow_slo_headroom_seconds``.
"""

from __future__ import annotations

import time
from collections import deque

import numpy as np

GROW_BELOW = 0.6  # p99 under 60% of the objective: wait longer
SHRINK_ABOVE = 0.85  # p99 over 85%: wait less
MIN_STEP_S = 0.0005


class AdaptiveWait:
    """The current wait, steered every ``period_s`` from the latencies observed since."""

    def __init__(
        self,
        max_wait_s: float,
        slo_s: float,
        *,
        adapt: bool = True,
        period_s: float = 1.0,
        window: int = 4096,
    ) -> None:
        self.max_wait_s, self.slo_s, self.adapt, self.period_s = max_wait_s, slo_s, adapt, period_s
        self.wait_s = max_wait_s if not adapt else max_wait_s / 2
        self.window = window
        self._latencies: deque[float] = deque(maxlen=window)
        self._next_update = time.monotonic() + period_s
        self.p99_s = float("nan")

    @property
    def headroom_s(self) -> float:
        """The objective minus the recent p99 (negative: the SLO is being missed)."""
        return self.slo_s - self.p99_s

    def observe(self, latencies_s: np.ndarray, now: float | None = None) -> None:
        self._latencies.extend(
            np.asarray(latencies_s, dtype=np.float64).ravel()[-self.window :].tolist()
        )
        now = time.monotonic() if now is None else now
        if now >= self._next_update:
            self._next_update = now + self.period_s
            self.update()

    def update(self) -> None:
        if not self._latencies:
            return
        self.p99_s = float(np.quantile(np.fromiter(self._latencies, dtype=np.float64), 0.99))
        self._latencies.clear()
        if not self.adapt:
            return
        if self.p99_s > SHRINK_ABOVE * self.slo_s:
            self.wait_s = self.wait_s / 2
        elif self.p99_s < GROW_BELOW * self.slo_s:
            self.wait_s = max(self.wait_s * 1.25, MIN_STEP_S)
        self.wait_s = min(self.max_wait_s, self.wait_s)
