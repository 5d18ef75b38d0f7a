"""The fleet-health pipeline's own code: its derived feature, its synthetic hosts, its model input.

It sits beside ``fleet-health.toml``, which names two things here: the transform
``add_watts_per_util`` (``[[transforms]]``, after clean) and the generator ``FleetGenerator``
(``[collector] synthetic``, what ``streamflow demo`` feeds the pipeline with).
``models/fleet-health/train.py`` trains the classifier on FleetGenerator's records through
``model_matrix``, which builds the model's input from records the way the pipeline does; the
integration test scores the same records both ways and compares.

The simulated fleet: hosts named ``rack3-host17``, each with a fixed rack, hardware model, power
draw, inlet air and disk kind. Every reading is one of four health classes (healthy most of the
time) and its numbers follow from the class: thermal runs hot with the fans up, power draws too
many watts for its load (and more often runs on battery), disk waits on slow I/O. The effects
overlap the healthy spread on purpose, and the hardware model and the hour shift the odds, so a
classifier has something to learn and does not get everything right.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from streamflow.collectors.synthetic import DAY_MS, DEFAULT_START_MS, Sample, TelemetryGenerator

CLASSES: tuple[str, ...] = ("healthy", "thermal", "power", "disk")  # the model's labels
HW_MODELS: tuple[str, ...] = (  # the hw_model vocabulary, in the model's one-hot column order
    "poweredge-r650",
    "poweredge-r750",
    "thinksystem-sr630",
    "proliant-dl380",
)
# hw_model values the vocabulary lacks (a model bought after training, another spelling)
UNKNOWN_HW_MODELS: tuple[str, ...] = ("poweredge-r760", "PowerEdge R650")
STATUSES: tuple[str, ...] = ("ok", "degraded", "maintenance")
MEASUREMENTS: tuple[str, ...] = (
    "cpu_temp_c",
    "inlet_temp_c",
    "fan_rpm",
    "power_w",
    "cpu_util_pct",
    "mem_util_pct",
    "disk_latency_ms",
)
REQUIRED: tuple[str, ...] = ("cpu_temp_c", "power_w", "cpu_util_pct")
# The pipeline's [[features]], in order (the model's input: hw_model takes 4 columns, one-hot).
FEATURES: tuple[str, ...] = (
    *MEASUREMENTS,
    "hw_model",
    "on_battery",
    "hour_of_day",
    "watts_per_util",
)
FAULTS: tuple[str, ...] = (  # a malformed record's fault, as TelemetryGenerator's
    "missing_required",
    "nan",
    "inf",
    "out_of_range",
    "wrong_type",
    "missing_host",
    "corrupt",
)
# The dead-letter reason code each fault gets (corrupt: truncated Avro, or a host length prefix
# longer than the message; both are invalid_avro).
FAULT_REASONS: dict[str, frozenset[str]] = {
    "missing_required": frozenset({"missing_required"}),
    "nan": frozenset({"non_finite"}),
    "inf": frozenset({"non_finite"}),
    "out_of_range": frozenset({"out_of_range"}),
    "wrong_type": frozenset({"wrong_type"}),
    "missing_host": frozenset({"missing_field"}),
    "corrupt": frozenset({"invalid_avro"}),
}
PIPELINE = Path(__file__).with_name("fleet-health.toml")
HOUR_MS = 3_600_000

_BASE_ODDS = np.array([0.85, 0.06, 0.05, 0.04])  # healthy, thermal, power, disk
# Per hardware model (HW_MODELS order): how much likelier each class is. The r750s are dense and
# run hot, the sr630s have marginal power supplies, the dl380s carry spinning disks.
_MODEL_ODDS = np.array(
    [
        [1.0, 1.0, 1.0, 1.0],
        [1.0, 2.0, 1.0, 0.8],
        [1.0, 1.0, 1.8, 0.8],
        [1.0, 0.8, 1.0, 2.2],
    ]
)
_MODEL_POWER = np.array([1.0, 1.35, 0.85, 1.15])  # watts relative to an r650 at the same load
_MODEL_HEAT = np.array([0.0, 4.0, -1.0, 1.0])  # CPU degrees above an r650 at the same load
_MODEL_DISK_MS = np.array([0.8, 0.8, 0.9, 4.0])  # median disk latency: NVMe, or spinning disks
_MODEL_SHARE = np.array([0.35, 0.25, 0.2, 0.2])  # of the fleet's hosts
_OUT_OF_RANGE = (  # the out_of_range fault: a value its reject rule refuses
    ("cpu_temp_c", 400.0),
    ("cpu_temp_c", -45.0),
    ("power_w", -50.0),
    ("power_w", 99_999.0),
    ("inlet_temp_c", -80.0),
)


def add_watts_per_util(cols: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The derived feature: watts per percent of CPU load (a load under 1% counts as 1%).

    A host drawing too much power for what it does is the ``power`` class's sign. Computed in
    float32, the model's input precision, whatever the columns' dtype: the pipeline and
    ``model_matrix`` then agree to the bit (the model's trees split on exact training values).
    """
    power = np.asarray(cols["power_w"], dtype=np.float32)
    util = np.asarray(cols["cpu_util_pct"], dtype=np.float32)
    return {"watts_per_util": power / np.maximum(util, np.float32(1))}


class FleetGenerator:
    """Readings from ``hosts`` hosts; ``sample(n)`` continues where the last call stopped.

    The interface of ``TelemetryGenerator`` (streamflow/collectors/synthetic.py): ``sample``
    returns ``Sample``s, with the health class in ``anomaly_kind`` (``anomaly``: not healthy),
    and ``corrupt_bytes`` damages the Avro bytes of a ``corrupt`` one.
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        hosts: int = 240,
        malformed_rate: float = 0.02,
        json_rate: float = 0.05,
        unknown_model_rate: float = 0.005,
        start_ms: int | None = None,
    ) -> None:
        self.rng = r = np.random.default_rng(seed)
        self.hosts = hosts
        self.malformed_rate, self.json_rate = malformed_rate, json_rate
        self.unknown_model_rate = unknown_model_rate
        self.start_ms = DEFAULT_START_MS if start_ms is None else start_ms
        self.count = 0
        self.names = [f"rack{h // 40 + 1}-host{h % 40 + 1}" for h in range(hosts)]
        self.racks = [f"rack{h // 40 + 1}" for h in range(hosts)]
        self.model = r.choice(len(HW_MODELS), size=hosts, p=_MODEL_SHARE)
        rack_inlet = r.uniform(19, 25, hosts // 40 + 1)
        self.inlet = rack_inlet[np.arange(hosts) // 40] + r.normal(0, 1.0, hosts)
        self.base_util = r.uniform(20, 65, hosts)
        self.amp = r.uniform(0.1, 0.4, hosts)
        self.phase = r.uniform(0, 2 * np.pi, hosts)
        self.power_scale = _MODEL_POWER[self.model] * r.uniform(0.92, 1.08, hosts)
        self.disk_ms = _MODEL_DISK_MS[self.model] * r.lognormal(0, 0.2, hosts)
        # TelemetryGenerator's corrupt_bytes, reused: here as there the first field is the key.
        self._telemetry = TelemetryGenerator(seed=seed, devices=1)

    def _classes(self, host: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """Each reading's class index, drawn with odds set by its host's model and the hour."""
        odds = _BASE_ODDS * _MODEL_ODDS[self.model[host]]
        hour = (ts // HOUR_MS) % 24
        odds[:, 1] *= 1 + 0.5 * np.cos(2 * np.pi * (hour - 15) / 24)  # afternoons run hot
        cum = np.cumsum(odds / odds.sum(axis=1, keepdims=True), axis=1)
        u = self.rng.random(len(host))[:, None]
        return np.minimum((u > cum).sum(axis=1), len(CLASSES) - 1)

    def _numbers(self, host: np.ndarray, ts: np.ndarray, cls: np.ndarray) -> dict[str, np.ndarray]:
        """The measurements of each reading (by name), from its host, time and class."""
        r, n = self.rng, len(host)
        thermal, power, disk = cls == 1, cls == 2, cls == 3
        angle = 2 * np.pi * (ts % DAY_MS) / DAY_MS
        util = self.base_util[host] * (1 + self.amp[host] * np.sin(angle + self.phase[host]))
        util = util * np.where(disk, r.uniform(0.6, 0.95, n), 1.0)  # waiting on I/O
        util = np.clip(util + r.normal(0, 6, n), 0, 100)
        inlet = self.inlet[host] + 1.5 * np.cos(angle - 2 * np.pi * 15 / 24) + r.normal(0, 0.6, n)
        inlet += np.where(thermal, r.uniform(1, 8, n), 0.0)  # a hot aisle, a failed CRAC unit
        cpu = inlet + 14 + 0.42 * util + _MODEL_HEAT[self.model[host]] + r.normal(0, 2.5, n)
        cpu += np.where(thermal, r.uniform(4, 16, n), 0.0)  # dust, dried paste, a blocked vent
        fan = 2800 + 120 * (cpu - 30) + r.normal(0, 350, n)
        fan += np.where(thermal, r.uniform(800, 4500, n), 0.0)
        watts = self.power_scale[host] * (140 + 4.2 * util) + r.normal(0, 18, n)
        watts *= np.where(power, r.uniform(1.15, 1.7, n), 1.0)  # a failing supply, no capping
        mem = np.clip(30 + 0.4 * util + r.normal(0, 8, n) + np.where(disk, 6.0, 0.0), 0, 100)
        latency = self.disk_ms[host] * r.lognormal(0, 0.35, n)
        latency *= np.where(disk, r.lognormal(np.log(8), 0.6, n), 1.0)
        return {
            "cpu_temp_c": np.round(cpu, 2),
            "inlet_temp_c": np.round(inlet, 2),
            "fan_rpm": np.round(np.clip(fan, 800, 25_000)),
            "power_w": np.round(np.maximum(watts, 40), 1),
            "cpu_util_pct": np.round(util, 2),
            "mem_util_pct": np.round(mem, 2),
            "disk_latency_ms": np.round(np.minimum(latency, 5000), 3),
        }

    def sample(self, n: int, *, interval_ms: float = 1.0) -> list[Sample]:
        """The next ``n`` readings; the simulated clock advances ``interval_ms`` per reading."""
        r = self.rng
        ts = (self.start_ms + (self.count + np.arange(n)) * interval_ms).astype(np.int64)
        self.count += n
        host = r.integers(0, self.hosts, n)
        cls = self._classes(host, ts)
        numbers = self._numbers(host, ts, cls)
        on_battery = r.random(n) < np.where(cls == 2, 0.3, 0.004)
        status_p = np.where((cls == 0)[:, None], [0.97, 0.02, 0.01], [0.75, 0.22, 0.03])
        status = np.minimum((r.random(n)[:, None] > np.cumsum(status_p, axis=1)).sum(axis=1), 2)
        optional = [m for m in MEASUREMENTS if m not in REQUIRED] + ["hw_model", "on_battery"]
        nulls = dict(zip(optional, r.random((len(optional), n)) < 0.01, strict=True))
        hw = np.array(HW_MODELS, dtype=object)[self.model[host]]
        unknown = r.random(n) < self.unknown_model_rate
        hw[unknown] = r.choice(np.array(UNKNOWN_HW_MODELS, dtype=object), size=int(unknown.sum()))
        u = r.random(n)
        malformed, as_json = u < self.malformed_rate, r.random(n) < self.json_rate
        faults = r.choice(FAULTS, size=n).tolist()
        columns: dict[str, list[Any]] = {name: numbers[name].tolist() for name in MEASUREMENTS}
        columns["hw_model"], columns["on_battery"] = hw.tolist(), on_battery.tolist()
        for name, null in nulls.items():
            columns[name] = [None if z else v for v, z in zip(columns[name], null, strict=True)]
        tss, hosts, cls_l = ts.tolist(), host.tolist(), cls.tolist()
        out = []
        for i in range(n):
            rec: dict[str, Any] = {
                "host": self.names[hosts[i]],
                "timestamp": tss[i],
                "rack": self.racks[hosts[i]],
                "status": STATUSES[status[i]],
            }
            for name, col in columns.items():
                rec[name] = col[i]
            if malformed[i]:
                out.append(Sample(rec, False, faults[i], self._break(rec, faults[i])))
            else:
                kind = CLASSES[cls_l[i]]
                encoding = "json" if as_json[i] else "avro"
                out.append(Sample(rec, kind != "healthy", None, encoding, kind))
        return out

    def _break(self, rec: dict[str, Any], fault: str) -> str:
        """Damage ``rec`` in place as ``fault`` says; return the encoding to use."""
        r = self.rng
        if fault == "missing_required":
            rec[str(r.choice(REQUIRED))] = None
        elif fault == "nan":
            rec[str(r.choice(MEASUREMENTS))] = float("nan")
        elif fault == "inf":
            rec[str(r.choice(MEASUREMENTS))] = float("inf") if r.random() < 0.5 else float("-inf")
        elif fault == "out_of_range":
            name, value = _OUT_OF_RANGE[int(r.integers(0, len(_OUT_OF_RANGE)))]
            rec[name] = value
        elif fault == "wrong_type":
            rec[str(r.choice(MEASUREMENTS))] = "hot" if r.random() < 0.7 else True
            return "json"
        elif fault == "missing_host":
            del rec["host"]
            return "json"
        elif fault == "corrupt":
            return "corrupt"
        return "avro"

    def corrupt_bytes(self, sample: Sample, encoded: bytes) -> bytes:
        """Deterministic damage to valid Avro bytes: truncation, or a huge length for the host."""
        return self._telemetry.corrupt_bytes(sample, encoded)


@cache
def pipeline_features(path: Path = PIPELINE) -> tuple[tuple[dict[str, Any], ...], str]:
    """The pipeline file's ``[[features]]`` tables, and its input timestamp field."""
    data = tomllib.loads(path.read_text())
    features = tuple(data["features"])
    names = tuple(f["name"] for f in features)
    if names != FEATURES:
        raise ValueError(f"{path}: [[features]] {names} are not fleet_health.FEATURES {FEATURES}")
    return features, str(data.get("input", {}).get("timestamp_field", "timestamp"))


def _number_column(records: Sequence[Mapping[str, Any]], f: Mapping[str, Any]) -> np.ndarray:
    """A float or int feature's cleaned column: defaults filled in, clipped where the rule says."""
    name, default = f["name"], f.get("default")
    raw = [rec.get(name) for rec in records]
    if f.get("required") and any(v is None for v in raw):
        raise ValueError(f"{name}: a record lacks this required feature")
    x = np.array([default if v is None else v for v in raw], dtype=np.float64)
    lo, hi = f.get("min", -np.inf), f.get("max", np.inf)
    if not np.isfinite(x).all():
        raise ValueError(f"{name}: non-finite value in a record (it would be dead-lettered)")
    if f.get("type") == "int" and (x != np.round(x)).any():
        raise ValueError(f"{name}: a value with a fraction (it would be dead-lettered)")
    if f.get("out_of_range", "reject") == "reject" and ((x < lo) | (x > hi)).any():
        raise ValueError(f"{name}: a value outside [{lo}, {hi}] (it would be dead-lettered)")
    return np.clip(x, lo, hi)


def _column(
    records: Sequence[Mapping[str, Any]], f: Mapping[str, Any], timestamp_field: str
) -> np.ndarray:
    """One feature's cleaned, un-normalized value per record (float64), as the clean step does."""
    kind, name = f.get("type", "float"), f["name"]
    if kind in ("float", "int"):
        return _number_column(records, f)
    if kind == "category":
        index = {v: i for i, v in enumerate(f["vocabulary"])}
        fallback = index.get(f.get("default", ""))
        out = []
        for rec in records:
            v = rec.get(name)
            if v is None and f.get("required"):
                raise ValueError(f"{name}: a record lacks this required feature")
            i = index.get(v) if v is not None else fallback
            if i is None and f.get("unknown", "reject") == "default" and fallback is not None:
                i = fallback
            if i is None:
                raise ValueError(f"{name}: {v!r} is not in the vocabulary")
            out.append(i)
        return np.array(out, dtype=np.float64)
    if kind == "bool":
        default = bool(f.get("default", False))
        return np.array(
            [default if rec.get(name) is None else bool(rec[name]) for rec in records], np.float64
        )
    if kind in ("hour_of_day", "day_of_week"):
        ms = np.array([rec[f.get("source") or timestamp_field] for rec in records], np.int64)
        if kind == "hour_of_day":
            return ((ms // HOUR_MS) % 24).astype(np.float64)
        return ((ms // DAY_MS + 3) % 7).astype(np.float64)  # 1970-01-01 was a Thursday
    raise ValueError(f"{name}: feature type {kind!r} is not one model_matrix knows")


def feature_columns(
    records: Sequence[Mapping[str, Any]], path: Path = PIPELINE
) -> dict[str, np.ndarray]:
    """Each feature's value per record as the model step receives it, before one-hot encoding.

    That is the clean step's float32 output (defaults filled in, clipped, a category as its
    vocabulary index, a bool as 0/1) with the after_clean transform's derived column. Raises
    ValueError on a record the pipeline would dead-letter: give it well-formed records only.
    """
    features, ts_field = pipeline_features(path)
    cols = {
        f["name"]: _column(records, f, ts_field).astype(np.float32)
        for f in features
        if not f.get("derived")
    }
    cols.update(add_watts_per_util(cols))
    return cols


def model_matrix(records: Sequence[Mapping[str, Any]], path: Path = PIPELINE) -> np.ndarray:
    """The model input for well-formed records, float32 [n, W]: the features in the pipeline's
    order, a one-hot category expanded in place (one column per vocabulary value)."""
    features, _ = pipeline_features(path)
    cols = feature_columns(records, path)
    parts = []
    for f in features:
        col = cols[f["name"]]
        if f.get("type") == "category" and f.get("encoding", "one_hot") == "one_hot":
            vocab = np.arange(len(f["vocabulary"]), dtype=np.float32)
            parts.append((col[:, None] == vocab[None, :]).astype(np.float32))
        else:
            parts.append(col[:, None])
    return np.ascontiguousarray(np.concatenate(parts, axis=1), dtype=np.float32)


def model_columns(path: Path = PIPELINE) -> list[str]:
    """The model input's column names: a one-hot category's as ``<feature>=<value>``."""
    features, _ = pipeline_features(path)
    out: list[str] = []
    for f in features:
        if f.get("type") == "category" and f.get("encoding", "one_hot") == "one_hot":
            out += [f"{f['name']}={v}" for v in f["vocabulary"]]
        else:
            out.append(f["name"])
    return out
