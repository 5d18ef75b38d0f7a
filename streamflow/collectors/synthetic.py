"""Synthetic data-center telemetry: many devices, daily cycles, noise, real anomalies, malformed
records.

Pure: numbers and dicts, no Kafka and no bytes (the collector encodes). Seeded and
vectorised: a batch of n readings is drawn with numpy, then turned into dicts once.

Physics, per device: utilisation follows a daily sinusoid (device-specific phase and
amplitude) plus noise; it drives power, CPU/GPU temperature (on top of the inlet
temperature), fan speed follows temperature, airflow follows the fan, current = power /
voltage, disk and network rates are heavy-tailed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

MEASUREMENTS: tuple[str, ...] = (
    "cpu_temp_c",
    "gpu_temp_c",
    "inlet_temp_c",
    "power_w",
    "fan_rpm",
    "cpu_util_pct",
    "gpu_util_pct",
    "mem_util_pct",
    "disk_read_mbps",
    "disk_write_mbps",
    "net_rx_mbps",
    "net_tx_mbps",
    "voltage_v",
    "current_a",
    "humidity_pct",
    "airflow_cfm",
)
REQUIRED = ("cpu_temp_c", "power_w", "cpu_util_pct")
ANOMALY_KINDS = (
    "overheating",
    "fan_failure",
    "power_spike",
    "voltage_sag",
    "network_flood",
    "cpu_hog",
)
FAULT_KINDS = (
    "missing_required",
    "nan",
    "inf",
    "out_of_range",
    "wrong_type",
    "missing_device_id",
    "corrupt",
)
DAY_MS = 86_400_000
DEFAULT_START_MS = 1_764_000_000_000  # a fixed clock, so seeded runs are reproducible

_COL = {name: i for i, name in enumerate(MEASUREMENTS)}


@dataclass(frozen=True)
class Sample:
    """One generated reading and what the generator knows about it."""

    record: dict[str, Any]
    anomaly: bool
    fault: str | None  # None for a well-formed record, else the malformed kind
    encoding: str  # "avro" | "json" | "corrupt": how a collector must encode it
    anomaly_kind: str | None = None


class TelemetryGenerator:
    """Readings from ``devices`` devices; ``sample(n)`` continues where the last call stopped."""

    def __init__(
        self,
        *,
        seed: int = 0,
        devices: int = 200,
        anomaly_rate: float = 0.01,
        malformed_rate: float = 0.02,
        json_rate: float = 0.05,
        start_ms: int | None = None,
    ) -> None:
        self.rng = np.random.default_rng(seed)
        self.devices = devices
        self.anomaly_rate, self.malformed_rate, self.json_rate = (
            anomaly_rate,
            malformed_rate,
            json_rate,
        )
        self.start_ms = DEFAULT_START_MS if start_ms is None else start_ms
        self.count = 0
        r = self.rng
        self.ids = [f"rack{d // 40 + 1}-node{d % 40 + 1}" for d in range(devices)]
        self.phase = r.uniform(0, 2 * np.pi, devices)
        self.amp = r.uniform(0.2, 0.5, devices)
        self.base_util = r.uniform(20, 60, devices)
        self.has_gpu = r.random(devices) < 0.5
        self.volts = np.where(r.random(devices) < 0.2, 208.0, 230.0)
        self.power_scale = r.uniform(0.8, 1.3, devices)
        self.inlet = r.uniform(18, 27, devices)
        self.humidity = r.uniform(30, 55, devices)

    def _numbers(self, n: int, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r, dev = self.rng, self.rng.integers(0, self.devices, n)
        angle = 2 * np.pi * (ts % DAY_MS) / DAY_MS
        util = np.clip(
            self.base_util[dev] * (1 + self.amp[dev] * np.sin(angle + self.phase[dev]))
            + r.normal(0, 5, n),
            0,
            100,
        )
        gpu_util = np.where(self.has_gpu[dev], np.clip(util * 0.9 + r.normal(0, 8, n), 0, 100), 0.0)
        inlet = self.inlet[dev] + 1.5 * np.sin(angle) + r.normal(0, 0.5, n)
        cpu_temp = inlet + 15 + 0.45 * util + r.normal(0, 2, n)
        gpu_temp = inlet + 10 + 0.5 * gpu_util + r.normal(0, 2, n)
        power = self.power_scale[dev] * (180 + 5.5 * util + 3 * gpu_util) + r.normal(0, 15, n)
        fan = np.clip(3000 + 110 * (cpu_temp - 30) + r.normal(0, 200, n), 1500, 13000)
        volts = self.volts[dev] + r.normal(0, 1.5, n)
        x = np.empty((n, len(MEASUREMENTS)))
        c = _COL
        x[:, c["cpu_temp_c"]], x[:, c["gpu_temp_c"]], x[:, c["inlet_temp_c"]] = (
            cpu_temp,
            gpu_temp,
            inlet,
        )
        x[:, c["power_w"]], x[:, c["fan_rpm"]], x[:, c["cpu_util_pct"]] = power, fan, util
        x[:, c["gpu_util_pct"]] = gpu_util
        x[:, c["mem_util_pct"]] = np.clip(30 + 0.4 * util + r.normal(0, 5, n), 0, 100)
        x[:, c["disk_read_mbps"]] = r.lognormal(np.log(50), 1.0, n)
        x[:, c["disk_write_mbps"]] = r.lognormal(np.log(30), 1.0, n)
        x[:, c["net_rx_mbps"]] = r.lognormal(np.log(200), 0.8, n) * (0.5 + util / 100)
        x[:, c["net_tx_mbps"]] = r.lognormal(np.log(150), 0.8, n) * (0.5 + util / 100)
        x[:, c["voltage_v"]] = volts
        x[:, c["current_a"]] = power / volts
        x[:, c["humidity_pct"]] = np.clip(self.humidity[dev] + r.normal(0, 1, n), 0, 100)
        x[:, c["airflow_cfm"]] = 40 + fan * 0.012 + r.normal(0, 5, n)
        return x, dev

    def _inject_anomalies(self, x: np.ndarray, rows: np.ndarray) -> list[str]:
        r, c = self.rng, _COL
        kinds = r.choice(ANOMALY_KINDS, size=len(rows)).tolist()
        for row, kind in zip(rows.tolist(), kinds, strict=True):
            if kind == "overheating":
                x[row, c["cpu_temp_c"]] += r.uniform(20, 35)
                x[row, c["gpu_temp_c"]] += r.uniform(15, 30)
                x[row, c["fan_rpm"]] = r.uniform(14000, 18000)
            elif kind == "fan_failure":
                x[row, c["fan_rpm"]] = r.uniform(0, 400)
                x[row, c["cpu_temp_c"]] += r.uniform(12, 25)
                x[row, c["airflow_cfm"]] = r.uniform(0, 15)
            elif kind == "power_spike":
                x[row, c["power_w"]] *= r.uniform(1.6, 2.5)
            elif kind == "voltage_sag":
                x[row, c["voltage_v"]] *= r.uniform(0.8, 0.88)
            elif kind == "network_flood":
                x[row, c["net_rx_mbps"]] *= r.uniform(20, 100)
                x[row, c["net_tx_mbps"]] *= r.uniform(5, 20)
            else:  # cpu_hog: pegged at 100% with power that does not fit the load
                x[row, c["cpu_util_pct"]] = 100.0
                x[row, c["power_w"]] *= r.uniform(0.45, 0.6)
            x[row, c["current_a"]] = x[row, c["power_w"]] / x[row, c["voltage_v"]]
        x[rows, c["cpu_temp_c"]] = np.minimum(x[rows, c["cpu_temp_c"]], 125.0)
        x[rows, c["gpu_temp_c"]] = np.minimum(x[rows, c["gpu_temp_c"]], 125.0)
        x[rows, c["power_w"]] = np.minimum(x[rows, c["power_w"]], 4900.0)
        return kinds

    def sample(self, n: int, *, interval_ms: float = 1.0) -> list[Sample]:
        """The next ``n`` readings; the simulated clock advances ``interval_ms`` per reading."""
        r = self.rng
        ts = (self.start_ms + (self.count + np.arange(n)) * interval_ms).astype(np.int64)
        self.count += n
        x, dev = self._numbers(n, ts)
        u = r.random(n)
        malformed = u < self.malformed_rate
        anomalous = (u >= self.malformed_rate) & (u < self.malformed_rate + self.anomaly_rate)
        anomaly_rows = np.flatnonzero(anomalous)
        kinds = self._inject_anomalies(x, anomaly_rows)
        kind_of = dict(zip(anomaly_rows.tolist(), kinds, strict=True))
        optional_null = (r.random((n, len(MEASUREMENTS))) < 0.01) & ~np.isin(
            np.array(MEASUREMENTS), REQUIRED
        )
        status = r.choice(["ok", "degraded", "maintenance"], size=n, p=[0.97, 0.02, 0.01]).tolist()
        as_json = (r.random(n) < self.json_rate).tolist()
        values = np.round(x, 3).tolist()
        nulls = optional_null.tolist()
        ids, tss, faults = self.ids, ts.tolist(), r.choice(FAULT_KINDS, size=n).tolist()
        out = []
        for i in range(n):
            rec: dict[str, Any] = {"device_id": ids[dev[i]], "timestamp": tss[i]}
            row, nrow = values[i], nulls[i]
            for j, name in enumerate(MEASUREMENTS):
                rec[name] = None if nrow[j] else row[j]
            rec["status"] = status[i]
            if malformed[i]:
                fault = faults[i]
                out.append(Sample(rec, False, fault, self._break(rec, fault)))
            else:
                out.append(
                    Sample(
                        rec,
                        bool(anomalous[i]),
                        None,
                        "json" if as_json[i] else "avro",
                        kind_of.get(i),
                    )
                )
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
            name, value = [
                ("cpu_temp_c", 400.0),
                ("power_w", -50.0),
                ("power_w", 99_999.0),
                ("voltage_v", 1200.0),
                ("inlet_temp_c", -80.0),
            ][int(r.integers(0, 5))]
            rec[name] = value
        elif fault == "wrong_type":
            rec[str(r.choice(MEASUREMENTS))] = "hot" if r.random() < 0.7 else True
            return "json"
        elif fault == "missing_device_id":
            del rec["device_id"]
            return "json"
        elif fault == "corrupt":
            return "corrupt"
        return "avro"

    def corrupt_bytes(self, sample: Sample, encoded: bytes) -> bytes:
        """Deterministic damage to valid Avro bytes: truncation, or a huge string length prefix."""
        if sample.record["timestamp"] % 2 == 0:
            return encoded[: max(1, len(encoded) // 2)]
        return b"\xfe\xff\xff\xff\x0f" + encoded[1:]  # device_id length prefix of ~2 GB
