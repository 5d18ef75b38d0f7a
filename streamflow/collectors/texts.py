"""Synthetic text records for the text pipeline: log lines and support tickets, some malformed.

Same interface as ``TelemetryGenerator`` (``sample(n)`` returns ``Sample``s; ``corrupt_bytes``),
so ``run_synthetic`` and ``streamflow demo`` feed whichever the pipeline's ``model.kind`` needs.
Texts come from templates in four topics (overheating, disk, network, other), with hosts,
numbers and lengths varied so the length buckets see short log lines and long tickets.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from streamflow.collectors.synthetic import Sample

TEMPLATES = {
    "overheating": [
        "CPU temperature on {host} reached {n} C, throttling",
        "{host}: fan {k} failed, temperature rising",
        "thermal alarm on {host}, GPU at {n} degrees",
        "the server {host} is overheating again",
    ],
    "disk": [
        "{host}: disk /dev/sd{d} is {n}% full",
        "no space left on device on {host} (/var/log)",
        "I/O errors reading /dev/nvme{k}n1 on {host}",
        "backup failed on {host}: storage volume full",
    ],
    "network": [
        "{host}: link eth{k} down, {n}% packet loss",
        "DNS resolution failed for api.internal from {host}",
        "connection to {host}:{port} timed out after {n} s",
        "high latency on the uplink of rack {k}: {n} ms",
    ],
    "other": [
        "please reset the password for user {k}",
        "invoice {port} was paid, thank you",
        "the maintenance window moved to Tuesday",
        "ticket {port}: how do I export my report?",
    ],
}
FILLER = (
    "Details follow.",
    "It started after the last deploy.",
    "Nobody changed the configuration.",
    "This happened twice this week.",
    "Please advise on next steps.",
    "Logs are attached to the ticket.",
)
FAULTS = ("null_text", "blank_text", "wrong_type", "missing_id", "corrupt")


class TextGenerator:
    def __init__(
        self,
        *,
        seed: int = 0,
        malformed_rate: float = 0.02,
        json_rate: float = 0.05,
        start_ms: int | None = None,
    ) -> None:
        self.rng = np.random.default_rng(seed)
        self.malformed_rate, self.json_rate = malformed_rate, json_rate
        self.start_ms = int(time.time() * 1000) if start_ms is None else start_ms
        self.count = 0

    def _text(self) -> tuple[str, str]:
        r = self.rng
        topic = str(r.choice(list(TEMPLATES)))
        text = str(r.choice(TEMPLATES[topic])).format(
            host=f"node{int(r.integers(1, 400)):03d}",
            n=int(r.integers(1, 100)),
            k=int(r.integers(0, 8)),
            d="abcdef"[int(r.integers(0, 6))],
            port=int(r.integers(1000, 9999)),
        )
        if r.random() < 0.3:  # a ticket: a few more sentences
            text += " " + " ".join(str(s) for s in r.choice(FILLER, size=int(r.integers(1, 8))))
        return topic, text

    def sample(self, n: int, *, interval_ms: float = 1.0) -> list[Sample]:
        out = []
        for _ in range(n):
            ts = int(self.start_ms + self.count * interval_ms)
            self.count += 1
            topic, text = self._text()
            rec: dict[str, Any] = {
                "id": f"msg-{self.count}",
                "timestamp": ts,
                "source": f"{topic}-feed",
                "text": text,
            }
            fault = (
                str(self.rng.choice(FAULTS)) if self.rng.random() < self.malformed_rate else None
            )
            encoding = "json" if self.rng.random() < self.json_rate else "avro"
            if fault == "null_text":
                rec["text"] = None
            elif fault == "blank_text":
                rec["text"] = "   "
            elif fault == "wrong_type":
                rec["text"], encoding = 42, "json"
            elif fault == "missing_id":
                del rec["id"]
                encoding = "json"
            elif fault == "corrupt":
                encoding = "corrupt"
            out.append(Sample(rec, False, fault, encoding, topic))
        return out

    def corrupt_bytes(self, sample: Sample, encoded: bytes) -> bytes:
        return encoded[: max(1, len(encoded) // 2)]  # truncated Avro
