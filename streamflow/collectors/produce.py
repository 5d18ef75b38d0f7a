"""Collectors: produce records into the raw topic (synthetic telemetry, JSON-lines or CSV files)."""

from __future__ import annotations

import csv
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from confluent_kafka import Producer

from streamflow.codecs import RecordCodec, schema_registry
from streamflow.kafka.config import producer_config
from streamflow.kafka.producer import produce_blocking
from streamflow.settings import Settings
from streamflow.signals import StopFlag

if TYPE_CHECKING:
    from streamflow.collectors.synthetic import Sample

log = logging.getLogger(__name__)


@dataclass
class ProduceStats:
    produced: int = 0
    failed: int = 0
    started: float = field(default_factory=time.monotonic)
    faults: dict[str, int] = field(default_factory=dict)
    anomalies: int = 0


class RawProducer:
    """Encodes records with the pipeline's input schema and produces them keyed by
    ``input.key_field``."""

    def __init__(self, settings: Settings, bootstrap: str, **config: Any) -> None:
        """``config``: librdkafka properties over the pipeline's (``producer_config``)."""
        self.settings = settings
        self.topic = settings.topics.raw
        fmt = "json" if settings.input.format == "json" else "avro"
        self.codec = RecordCodec(
            settings.input.schema,
            format=fmt,
            registry=schema_registry(settings),
            topic=self.topic,
        )
        # 5 ms batches a collector's records (the embedded broker slows with every batch it
        # stores); a linger.ms in [kafka.producer] is the user's to choose
        linger = {} if "linger.ms" in settings.kafka.producer else {"linger.ms": 5}
        self.producer = Producer(producer_config(settings, bootstrap, **(linger | config)))
        self.stats = ProduceStats()
        self._lock = threading.Lock()

    def _on_delivery(self, err: Any, msg: Any) -> None:
        if err is not None:
            with self._lock:
                self.stats.failed += 1
            log.error("raw record not delivered: %s", err.str())

    def key_of(self, record: dict[str, Any]) -> bytes | None:
        k = record.get(self.settings.input.key_field)
        return str(k).encode() if k is not None else None

    def send(
        self, value: bytes, key: bytes | None, on_delivery: Callable[[Any, Any], None] | None = None
    ) -> None:
        """Queue one message; ``on_delivery(err, msg)`` is called too once the broker answers."""
        callback = self._on_delivery
        if on_delivery is not None:

            def callback(err: Any, msg: Any) -> None:
                self._on_delivery(err, msg)
                on_delivery(err, msg)

        produce_blocking(self.producer, self.topic, value, key, on_delivery=callback)
        with self._lock:
            self.stats.produced += 1

    def send_record(self, record: dict[str, Any]) -> None:
        self.send(self.codec.encode(record), self.key_of(record))

    def poll(self) -> None:
        self.producer.poll(0)

    def flush(self, timeout_s: float = 30.0) -> int:
        return int(self.producer.flush(timeout_s))


class Generator(Protocol):
    """What the synthetic collector draws records from (``TelemetryGenerator``'s interface)."""

    def sample(self, n: int, *, interval_ms: float = 1.0) -> list[Sample]: ...

    def corrupt_bytes(self, sample: Sample, encoded: bytes) -> bytes: ...


def synthetic_generator(
    settings: Settings,
    *,
    seed: int,
    devices: int,
    anomaly_rate: float,
    malformed_rate: float,
    start_ms: int,
) -> Generator:
    """``collector.synthetic``'s class (``module:Class``, beside the pipeline file), built with
    ``seed``, ``start_ms`` and ``malformed_rate``; else the model kind's own: telemetry readings
    or texts."""
    from streamflow.collectors.synthetic import TelemetryGenerator
    from streamflow.collectors.texts import TextGenerator
    from streamflow.inference.kinds import kind_class
    from streamflow.stages.transforms import import_named

    spec = settings.collector.synthetic
    if spec:
        folder = str(Path(settings.source).resolve().parent)
        cls = import_named(spec, "collector.synthetic", folder)
        gen: Generator = cls(seed=seed, start_ms=start_ms, malformed_rate=malformed_rate)
        return gen
    if kind_class(settings.model.kind).synthetic == "texts":  # log lines and tickets
        return TextGenerator(seed=seed, malformed_rate=malformed_rate, start_ms=start_ms)
    return TelemetryGenerator(
        seed=seed,
        devices=devices,
        anomaly_rate=anomaly_rate,
        malformed_rate=malformed_rate,
        start_ms=start_ms,
    )


def run_synthetic(
    raw: RawProducer,
    *,
    rate: float,
    records: int,
    seed: int = 0,
    stop: threading.Event | StopFlag | None = None,
    malformed_rate: float = 0.02,
    anomaly_rate: float = 0.01,
    devices: int = 200,
) -> ProduceStats:
    """Produce ``records`` synthetic readings (0: until ``stop``) at ``rate`` per second (0: as
    fast as possible)."""
    interval_ms = 1000.0 / rate if rate > 0 else 1.0
    gen = synthetic_generator(
        raw.settings,
        seed=seed,
        devices=devices,
        anomaly_rate=anomaly_rate,
        malformed_rate=malformed_rate,
        start_ms=int(time.time() * 1000),
    )
    stats = raw.stats
    stats.started = time.monotonic()
    chunk = max(1, min(1000, int(rate / 100) if rate > 0 else 1000))
    while not (stop is not None and stop.is_set()):
        n = chunk if records <= 0 else min(chunk, records - stats.produced)
        if n <= 0:
            break
        for sample in gen.sample(n, interval_ms=interval_ms):
            rec = sample.record
            if sample.encoding == "json":
                value = json.dumps(rec).encode()
            else:
                value = raw.codec.encode(rec)
                if sample.encoding == "corrupt":
                    value = gen.corrupt_bytes(sample, value)
            raw.send(value, raw.key_of(rec))
            if sample.fault:
                stats.faults[sample.fault] = stats.faults.get(sample.fault, 0) + 1
            stats.anomalies += sample.anomaly
        raw.poll()
        if rate > 0:  # pace against the wall clock, not per record
            ahead = stats.produced / rate - (time.monotonic() - stats.started)
            if ahead > 0:
                time.sleep(ahead)
    raw.flush()
    return stats


def read_records(path: Path) -> Iterator[tuple[int, dict[str, Any] | None, str]]:
    """(line number, record or None, error) for each line of a JSON-lines or CSV file.

    CSV (by extension): a header row, empty cell = null. A bad line yields its error
    instead of ending the file.
    """
    if path.suffix.lower() == ".csv":
        with path.open(newline="") as f:
            for i, row in enumerate(csv.DictReader(f), start=2):
                yield i, {k: _csv_value(v) for k, v in row.items() if k}, ""
        return
    with path.open() as f:
        for i, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                yield i, None, f"invalid JSON: {exc}"
                continue
            if not isinstance(rec, dict):
                yield i, None, "not a JSON object"
                continue
            yield i, rec, ""


def _csv_value(v: str | None) -> Any:
    if v is None or v == "":
        return None
    for conv in (int, float):
        try:
            return conv(v)
        except ValueError:
            pass
    return v


class Progress:
    """A progress bar on a terminal; plain lines every few seconds otherwise (CI, pipes)."""

    def __init__(self, total: int, label: str, out: Any = None) -> None:
        self.total, self.label = total, label
        self.out = out or sys.stderr
        self.tty = bool(getattr(self.out, "isatty", lambda: False)())
        self.last = 0.0

    def update(self, done: int, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < (0.2 if self.tty else 5.0):
            return
        self.last = now
        pct = 100.0 * done / self.total if self.total else 100.0
        if self.tty:
            bar = "#" * int(pct / 4)
            self.out.write(f"\r{self.label} [{bar:<25}] {done}/{self.total} ({pct:5.1f}%)")
            if force:
                self.out.write("\n")
        else:
            self.out.write(f"{self.label}: {done}/{self.total} ({pct:.1f}%)\n")
        self.out.flush()


def run_file(
    raw: RawProducer, path: Path, *, on_bad_line: Callable[[int, str], None] | None = None
) -> ProduceStats:
    """Produce every record of a file. A record that does not fit the input schema is sent as
    JSON, so the pipeline dead-letters it with the reason; a line that is not a record at all
    is reported through ``on_bad_line`` and skipped."""
    with path.open() as f:
        total = sum(1 for line in f if line.strip()) - (1 if path.suffix.lower() == ".csv" else 0)
    progress = Progress(max(total, 0), f"{path.name} -> {raw.topic}")
    n = 0
    for lineno, rec, error in read_records(path):
        n += 1
        if rec is None:
            if on_bad_line:
                on_bad_line(lineno, error)
            continue
        try:
            raw.send_record(rec)
        except Exception as exc:  # noqa: BLE001 - any encoding failure means "does not fit the schema"
            log.warning("line %d does not fit the input schema (%s); sent as JSON", lineno, exc)
            raw.send(json.dumps(rec).encode(), raw.key_of(rec))
        if n % 1000 == 0:
            raw.poll()
            progress.update(n)
    raw.flush()
    progress.update(n, force=True)
    return raw.stats
