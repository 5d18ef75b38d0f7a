"""Python's garbage collector in a stage process: what start-up made is frozen, and the young
generation is collected less often.

Measured on a chained backlog of 300,000 records (2 cores, issue 13): with Python's defaults
the stage spent 1.8 s of its 6.7 s of CPU in the collector, 1.5 s of it in 26 full
collections (0.44 s once start-up was frozen). Each full collection walked every object
start-up made (faust, aiokafka, numpy, ONNX Runtime, the model), although none of them ever
becomes garbage: records, messages and their delivery closures are freed by reference counting
as soon as they are done with, and the collector (which exists for reference cycles) finds next
to nothing on the hot path.

``settle`` is the one call a stage makes, once its agent runs (start-up is over):

- ``freeze_startup`` moves every object alive then into the permanent
  generation, which no collection walks again.
- ``tune`` raises the young generation's threshold (``runtime.gc_threshold``; Python's is 700
  net new container objects; 0 keeps Python's and freezes nothing). A young pause walks about
  that many objects, so the threshold trades total collector time for the length of each
  pause. Same backlog, one run each, start-up frozen (collector seconds in all / young pause
  on average): 700 -> 1.01 s / 0.07 ms; 10,000 -> 0.67 s / 2.6 ms; 20,000 (the default) ->
  0.49 s / 8 ms; 50,000 -> 0.17 s / 18 ms.

With both the chained stage went from 20-23 to 15-16 CPU µs per record, and from 0.69x to
0.87x of the plain loop's backlog throughput (``streamflow bench e2e``, median of 3).

The pauses are exported as ``streamflow_gc_pause_seconds`` (per generation), so a dashboard
shows what the collector costs a stage.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

Observe = Callable[[int, float], None]  # (generation, seconds) of one collection


class PauseMeter:
    """A ``gc.callbacks`` entry timing each collection."""

    def __init__(self, observe: Observe) -> None:
        self.observe = observe
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.observe(int(info["generation"]), time.perf_counter() - self._started)


def tune(threshold: int, observe: Observe | None = None) -> None:
    """Collect the young generation every ``threshold`` allocations (0: Python's default), the
    older ones at Python's own ratios; time every collection into ``observe``."""
    if threshold:
        _, middle, old = gc.get_threshold()
        gc.set_threshold(threshold, middle, old)
    if observe is not None and not any(isinstance(c, PauseMeter) for c in gc.callbacks):
        gc.callbacks.append(PauseMeter(observe))


def settle(threshold: int, observe: Observe | None = None) -> int:
    """Once start-up is over: time every collection into ``observe`` and, unless ``threshold``
    is 0 (Python's collector as it comes, nothing frozen), freeze what start-up made and
    collect the young generation every ``threshold`` allocations. Returns how many objects
    that froze."""
    tune(threshold, observe)
    return freeze_startup() if threshold else 0


def freeze_startup() -> int:
    """Collect once, then move every object alive into the permanent generation (never walked
    again). Returns how many objects that froze."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
