"""Cross-field rules on built settings: what no single field's type can say.

Ranges, keys that must agree with each other, statistics present, files that exist. A choice
(a ``Literal`` field: a device, a topology, a security protocol, ...) was already checked while
loading (``streamflow.settings.loading``), so it is not repeated here. The rules that hold only
for one model kind are the kind's own (``check_settings`` in ``streamflow/inference/kinds/``):
this module sits above the base layer for that reason (docs/architecture.md).
"""

from __future__ import annotations

import math
from pathlib import Path

from streamflow.codecs.avro import registry_problems
from streamflow.collectors.http_tls import check_tls
from streamflow.errors import ConfigError
from streamflow.inference.kinds import settings_problems
from streamflow.kafka.config import passthrough_problems
from streamflow.settings.files import missing_files
from streamflow.settings.schema import SASL_MECHANISMS, FeatureSpec, KafkaSettings, Settings
from streamflow.stages.transforms import import_named, load_function

# pyarrow's Parquet codecs (store.compression)
PARQUET_CODECS = ("none", "snappy", "gzip", "brotli", "lz4", "zstd")


def check(s: Settings) -> list[str]:
    """Static checks that read no other file (they may see whether one exists): ranges, stats
    present, keys that must agree, then the model kind's own rules (``check_settings``)."""
    p: list[str] = []
    for key in ("raw", "scored", "dlq"):
        if not getattr(s.topics, key):
            p.append(f"topics.{key}: a topic name is required")
    if len({s.topics.raw, s.topics.scored, s.topics.dlq}) != 3:
        p.append("topics: raw, scored and dlq must be three different topics")
    if s.topics.partitions < 1:
        p.append(f"topics.partitions: must be >= 1, got {s.topics.partitions}")
    lim = s.limits
    for key in ("max_message_bytes", "max_string_length", "max_array_length"):
        if getattr(lim, key) < 1:
            p.append(f"limits.{key}: must be >= 1, got {getattr(lim, key)}")
    if lim.max_message_bytes > s.kafka.max_message_bytes:
        # Accepted records travel on in internal batches and dead letters: our producer must
        # take them.
        p.append(
            f"limits.max_message_bytes: {lim.max_message_bytes} is more than "
            f"kafka.max_message_bytes {s.kafka.max_message_bytes}, the largest message "
            "streamflow produces (raise both)"
        )
    p.extend(settings_problems(s))  # the model kind's own keys (inference/kinds/)
    p.extend(check_transforms(s))
    for key in ("input.schema", "output.schema", "model.path"):
        section, _, attr = key.partition(".")
        value = getattr(getattr(s, section), attr)
        if not value and key == "output.schema":
            continue  # generated from the declaration ([[outputs]], [result])
        if not value:
            p.append(f"{key}: a path is required")
        elif not Path(value).is_file():
            p.append(f"{key}: file not found: {value}")
    if not 0.0 <= s.model.threshold <= 1.0:
        p.append(f"model.threshold: must be within [0, 1], got {s.model.threshold}")
    if not s.model.outputs:
        p.append("model.outputs: name at least one output")
    if s.model.watch_interval_s < 0:
        p.append(
            "model.watch_interval_s: must be >= 0 (0 turns hot swap off), "
            f"got {s.model.watch_interval_s}"
        )
    sha = s.model.sha256
    if sha and (len(sha) != 64 or not all(c in "0123456789abcdef" for c in sha.lower())):
        p.append("model.sha256: expected 64 hexadecimal digits")
    b = s.batching
    if b.max_batch < 1:
        p.append(f"batching.max_batch: must be >= 1, got {b.max_batch}")
    if b.clean_max_batch < 1:
        p.append(f"batching.clean_max_batch: must be >= 1, got {b.clean_max_batch}")
    if any(not 1 <= n <= b.max_batch for n in b.preferred_batch_sizes):
        p.append(
            "batching.preferred_batch_sizes: each must be within 1..batching.max_batch "
            f"({b.max_batch}), got {list(b.preferred_batch_sizes)}"
        )
    if b.max_queue_records < 0:
        p.append(
            f"batching.max_queue_records: must be >= 0 (0: two batches), got {b.max_queue_records}"
        )
    if b.max_in_flight < 1:
        p.append(f"batching.max_in_flight: must be >= 1, got {b.max_in_flight}")
    if not 0.0 <= b.max_delay_ms <= 60_000:
        p.append(f"batching.max_delay_ms: must be within [0, 60000], got {b.max_delay_ms}")
    if s.runtime.device_id < 0:
        p.append(f"runtime.device_id: must be >= 0, got {s.runtime.device_id}")
    if not s.runtime.drain_timeout_s > 0:
        p.append(f"runtime.drain_timeout_s: must be > 0, got {s.runtime.drain_timeout_s}")
    if s.runtime.intra_op_threads < 0 or s.runtime.inter_op_threads < 0:
        p.append("runtime: thread counts must be >= 0 (0 lets ONNX Runtime choose)")
    if not 0 < s.metrics.port < 65536:
        p.append(f"metrics.port: must be within 1..65535, got {s.metrics.port}")
    if not 0 <= s.collector.port < 65536:
        p.append(
            f"collector.port: must be within 0..65535 (0: any free port), got {s.collector.port}"
        )
    if s.collector.max_body_bytes < 1:
        p.append(f"collector.max_body_bytes: must be >= 1, got {s.collector.max_body_bytes}")
    if s.kafka.session_timeout_s <= s.kafka.heartbeat_interval_s:
        p.append("kafka.session_timeout_s: must be greater than kafka.heartbeat_interval_s")
    if not s.kafka.delivery_timeout_s > 0:
        p.append(f"kafka.delivery_timeout_s: must be > 0, got {s.kafka.delivery_timeout_s}")
    if not 0 < s.kafka.retry_backoff_s <= s.kafka.retry_backoff_max_s:
        p.append("kafka.retry_backoff_s: must be > 0 and <= kafka.retry_backoff_max_s")
    if not s.slo.p99_latency_ms > 0:
        p.append(f"slo.p99_latency_ms: must be > 0, got {s.slo.p99_latency_ms}")
    if not 0 < s.slo.max_dead_letter_ratio <= 1:
        p.append(
            f"slo.max_dead_letter_ratio: must be within (0, 1], got {s.slo.max_dead_letter_ratio}"
        )
    if not s.slo.max_lag_seconds > 0:
        p.append(f"slo.max_lag_seconds: must be > 0, got {s.slo.max_lag_seconds}")
    if s.kafka.fetch_max_wait_ms < 0:
        p.append("kafka.fetch_max_wait_ms: must be >= 0")
    if not 0 <= s.kafka.fetch_idle_max_wait_ms <= 60_000:
        p.append(
            "kafka.fetch_idle_max_wait_ms: must be within [0, 60000], "
            f"got {s.kafka.fetch_idle_max_wait_ms}"
        )
    p.extend(check_kafka_security(s.kafka))
    p.extend(registry_problems(s.input.schema_registry_url, s.schema_registry))
    if s.store.compression.lower() not in PARQUET_CODECS:
        p.append(
            f"store.compression: {s.store.compression!r} is not a Parquet codec "
            f"({', '.join(PARQUET_CODECS)})"
        )
    p.extend(passthrough_problems(s.kafka))
    p.extend(check_tls(s.collector))  # `collect http`: also reported by validate
    if s.monitoring.drift_window < 100:
        p.append(f"monitoring.drift_window: must be >= 100, got {s.monitoring.drift_window}")
    if not s.monitoring.max_input_psi > 0:
        p.append(f"monitoring.max_input_psi: must be > 0, got {s.monitoring.max_input_psi}")
    if len(set(s.result.metadata)) != len(s.result.metadata):
        p.append("result.metadata: a value is listed twice")
    seen: set[str] = set()
    for i, f in enumerate(s.features):
        where = f"features[{i}] ({f.name})"
        if f.name in seen:
            p.append(f"{where}: duplicate feature name")
        seen.add(f.name)
        if f.out_of_range == "clip" and (f.min is None or f.max is None):
            p.append(f"{where}.out_of_range: clip needs both min and max")
        if f.min is not None and f.max is not None and not f.min < f.max:
            p.append(f"{where}: min must be < max")
        p.extend(check_feature_type(f, where))
        if not f.required and f.default is None and not f.derived:
            p.append(
                f"{where}.default: an optional feature needs a default (or set required = true)"
            )
        if f.derived and not any(t.at == "after_clean" for t in s.transforms):
            p.append(
                f"{where}.derived: a derived feature is set by an after_clean [[transforms]] "
                "function; there is none"
            )
        steps = f.normalize
        if "log1p" in steps and steps[0] != "log1p":
            p.append(f"{where}.normalize: log1p must come first")
        if "log1p" in steps and f.min is not None and f.min <= -1:
            p.append(f"{where}.normalize: log1p needs min > -1")
        if "zscore" in steps:
            if f.mean is None or f.std is None:
                p.append(f"{where}: zscore needs mean and std (inline or in model.stats)")
            elif not f.std > 0:
                p.append(f"{where}.std: must be > 0")
        if "minmax" in steps:
            if f.scale_min is None or f.scale_max is None:
                p.append(
                    f"{where}: minmax needs scale_min and scale_max (inline or in model.stats)"
                )
            elif not f.scale_min < f.scale_max:
                p.append(f"{where}: scale_min must be < scale_max")
        if sum(st in ("zscore", "minmax") for st in steps) > 1:
            p.append(f"{where}.normalize: use at most one of zscore and minmax")
    return p


def check_feature_type(f: FeatureSpec, where: str) -> list[str]:
    """The keys of a feature's type: a category's vocabulary and default, a boolean's default, a
    number's; what only numbers take (ranges, scaling) on the others."""
    p: list[str] = []
    if f.type in ("float", "int"):
        if f.default is not None and (
            isinstance(f.default, bool | str) or not math.isfinite(f.default)
        ):
            p.append(f"{where}.default: must be a finite number")
    else:
        for key in ("min", "max"):
            if getattr(f, key) is not None and f.type in ("bool", "category"):
                p.append(f"{where}.{key}: a {f.type} feature has no range")
    if f.type == "bool" and f.default is not None and not isinstance(f.default, bool):
        p.append(f"{where}.default: must be true or false")
    if f.type in ("hour_of_day", "day_of_week") and isinstance(f.default, bool | str):
        p.append(f"{where}.default: must be a number")
    if f.type == "category":
        if not f.vocabulary:
            p.append(f"{where}.vocabulary: a category needs its values, in the model's order")
        elif len(set(f.vocabulary)) != len(f.vocabulary):
            p.append(f"{where}.vocabulary: a value is listed twice")
        if f.default is not None and f.default not in f.vocabulary:
            p.append(f"{where}.default: {f.default!r} is not in the vocabulary")
        if f.unknown == "default" and f.default is None:
            p.append(f'{where}.unknown: "default" needs a default (a vocabulary value)')
        if f.encoding == "one_hot" and tuple(f.normalize) != ("none",):
            p.append(f'{where}.normalize: a one-hot category is not scaled (use "none")')
    elif f.vocabulary:
        p.append(f"{where}.vocabulary: only a category feature has one")
    if f.source and f.type not in ("hour_of_day", "day_of_week"):
        p.append(f"{where}.source: only hour_of_day and day_of_week read another field")
    return p


def check_kafka_security(k: KafkaSettings) -> list[str]:
    """TLS and SASL settings: a protocol that needs a mechanism or credentials gets them, files
    exist.

    Credentials alone are inert (the protocol and mechanism decide what is used), so a shared
    environment may set them everywhere; a mechanism or TLS file under a protocol that does
    not use it is an error, as it says the user expects something that would not happen.
    Messages never contain a secret's value."""
    p: list[str] = []
    proto = k.security_protocol
    sasl, tls = proto.startswith("SASL_"), proto.endswith("SSL")
    if sasl and not k.sasl_mechanism:
        p.append(
            f"kafka.sasl_mechanism: kafka.security_protocol = {proto} needs a mechanism "
            f"({', '.join(SASL_MECHANISMS)})"
        )
    elif k.sasl_mechanism and not sasl:
        p.append(
            f"kafka.sasl_mechanism: {k.sasl_mechanism} is set but "
            f"kafka.security_protocol = {proto} does not use SASL "
            "(SASL_PLAINTEXT or SASL_SSL)"
        )
    elif sasl and k.sasl_mechanism == "OAUTHBEARER":
        for key in ("sasl_oauth_token_url", "sasl_oauth_client_id", "sasl_oauth_client_secret"):
            if not getattr(k, key):
                p.append(f"kafka.{key}: required with kafka.sasl_mechanism = OAUTHBEARER")
        url = k.sasl_oauth_token_url
        if url and not url.startswith(("https://", "http://")):
            p.append(f"kafka.sasl_oauth_token_url: expected an http(s) URL, got {url!r}")
    elif sasl:
        for key in ("sasl_username", "sasl_password"):
            if not getattr(k, key):
                p.append(f"kafka.{key}: required with kafka.sasl_mechanism = {k.sasl_mechanism}")
    tls_files = ("ssl_cafile", "ssl_certfile", "ssl_keyfile")
    if tls:
        p += missing_files("kafka", k, tls_files)
    else:
        p += [
            f"kafka.{key}: is set but kafka.security_protocol = {proto} does not use "
            "TLS (SSL or SASL_SSL)"
            for key in tls_files
            if getattr(k, key)
        ]
    if k.ssl_keyfile and not k.ssl_certfile:
        p.append(
            "kafka.ssl_keyfile: needs kafka.ssl_certfile (the client certificate it belongs to)"
        )
    return p


# Each model kind's own rules. Self-contained (they may move to the kind's module): each
# reads only the settings, and names every key it blames.


def check_transforms(s: Settings) -> list[str]:
    """Each [[transforms]] function imports and takes one argument (the columns)."""
    p: list[str] = []
    folder = str(Path(s.source).resolve().parent)
    for i, t in enumerate(s.transforms):
        try:
            load_function(t.function, f"transforms[{i}].function", folder)
        except ConfigError as exc:
            p.extend(exc.problems)
    if s.collector.synthetic:
        try:
            cls = import_named(s.collector.synthetic, "collector.synthetic", folder)
        except ConfigError as exc:
            p.extend(exc.problems)
        else:
            if not callable(getattr(cls, "sample", None)):
                p.append(
                    f"collector.synthetic: {s.collector.synthetic} has no sample(n, interval_ms) "
                    "method (see streamflow/collectors/synthetic.py, TelemetryGenerator)"
                )
    return p
