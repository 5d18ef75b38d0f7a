"""Hot swap: a new model file is loaded and warmed beside the running one, then used from the
next batch.

The inference stage asks ``current()`` at the start of every batch and scores the whole
batch with the model it got, naming that model's version in every result. The watcher
looks at the model file (size, mtime, inode) at most every ``model.watch_interval_s``; when
it changed it loads the new file on a thread of its own (the running model keeps scoring),
runs one warm-up batch, and only then hands it out. So no batch is dropped or scored twice
and every result names the version that scored it. A file that does not load, or that a
``model.sha256`` pin refuses, is reported and the running model stays.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from streamflow.errors import ModelError, StreamflowError
from streamflow.inference.session import LoadedModel

log = logging.getLogger(__name__)


def _stamp(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None  # being replaced (rename) or gone: keep the running model
    return st.st_size, st.st_mtime_ns, st.st_ino


class ModelWatcher:
    def __init__(
        self,
        model: LoadedModel,
        load: Callable[[], LoadedModel],
        interval_s: float,
        on_swap: Callable[[LoadedModel, LoadedModel], None],
    ) -> None:
        self.model, self._load, self.interval_s, self._on_swap = model, load, interval_s, on_swap
        self._stamp = _stamp(model.path)
        self._next_check = time.monotonic() + interval_s
        self._loading: asyncio.Future[LoadedModel] | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="streamflow-model-load")

    def current(self) -> LoadedModel:
        """The model for the next batch (the new one once it is loaded and warm)."""
        if self._loading is not None and self._loading.done():
            loading, self._loading = self._loading, None
            try:
                new = loading.result()
            except StreamflowError as exc:
                log.error(
                    "model file %s changed but cannot be used, still scoring with %s %s: %s",
                    self.model.path,
                    self.model.name,
                    self.model.version,
                    exc,
                )
            else:
                if new is self.model:  # touched, same bytes
                    return self.model
                old, self.model = self.model, new
                log.info(
                    "model swapped: %s %s (sha256 %s) -> %s %s (sha256 %s), from the next batch on",
                    old.name,
                    old.version,
                    old.sha256[:12],
                    new.name,
                    new.version,
                    new.sha256[:12],
                )
                self._on_swap(old, new)
        elif self.interval_s > 0 and self._loading is None and time.monotonic() >= self._next_check:
            self._next_check = time.monotonic() + self.interval_s
            stamp = _stamp(self.model.path)
            if stamp is not None and stamp != self._stamp:
                self._stamp = stamp
                self._loading = asyncio.get_running_loop().run_in_executor(
                    self._pool, self._load_and_warm
                )
        return self.model

    def _load_and_warm(self) -> LoadedModel:
        new = self._load()
        if new.sha256 == self.model.sha256:
            return self.model  # touched, same bytes
        if (
            new.version == self.model.version
        ):  # the pipeline file names one version: tell them apart
            new.version = f"{self.model.version.split('+')[0]}+{new.sha256[:12]}"
        new.run(np.zeros((1, new.n_features), dtype=np.float32))  # warm-up before it takes traffic
        if new.kind is not None and self.model.kind is not None:
            before, after = self.model.kind.output_fields(), new.kind.output_fields()
            if before != after:  # the result schema is the pipeline's: it does not change
                raise ModelError(
                    "its outputs make other result fields "
                    f"({', '.join(f.name for f in after)}) than the model scoring now "
                    f"({', '.join(f.name for f in before)})"
                )
        return new
