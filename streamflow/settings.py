"""One frozen settings object, built once at start-up.

Sources, highest first: CLI overrides (``section.key=value``), ``STREAMFLOW_<SECTION>_<KEY>``
environment variables, the pipeline file (TOML). Every problem found is reported at once,
each naming its key and the file or variable it came from; nothing is checked lazily on
the first record. This is the only module that reads the environment.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from streamflow.errors import ConfigError

ENV_PREFIX = "STREAMFLOW_"
NORMALIZERS = ("zscore", "minmax", "log1p", "none")
DEVICES = ("auto", "cpu", "cuda", "tensorrt")
FORMATS = ("avro", "json", "auto")
MODEL_KINDS = ("tabular", "text-embedding")
TEXT_INPUTS = ("input_ids", "attention_mask")  # a text-embedding model's inputs, int64 [batch, tokens]
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER")


class Secret:
    """A password, client secret or token. Its value shows nowhere (repr, str, logs, errors):
    only ``reveal()`` returns it, for the one place that hands it to a client."""

    __slots__ = ("_value",)

    def __init__(self, value: str = "") -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __repr__(self) -> str:
        return "Secret('********')" if self._value else "Secret('')"

    __str__ = __repr__


@dataclass(frozen=True)
class TopicSettings:
    raw: str = ""
    scored: str = ""
    dlq: str = ""
    partitions: int = 4
    replication: int = 1
    internal_partitions: int = 0  # 0: same as partitions


@dataclass(frozen=True)
class InputSettings:
    schema: str = ""
    format: str = "auto"  # avro | json | auto (JSON when the value starts with '{')
    key_field: str = "device_id"
    timestamp_field: str = "timestamp"
    schema_registry_url: str = ""
    text_field: str = "text"  # model.kind = "text-embedding": the field holding the text


@dataclass(frozen=True)
class LimitSettings:
    """What one input record may contain; anything larger is dead-lettered before it is read.

    ``max_message_bytes`` bounds key + value. A length prefix (an Avro string or bytes, an
    array or map block) is checked against these limits before anything is allocated.
    """

    max_message_bytes: int = 1_048_576
    max_string_length: int = 4096  # bytes of an Avro string/bytes; characters of a JSON string field
    max_array_length: int = 4096  # items of one Avro array or map (input or registry writer schema)


@dataclass(frozen=True)
class OutputSettings:
    schema: str = ""
    format: str = "avro"  # avro | json


@dataclass(frozen=True)
class ModelSettings:
    kind: str = "tabular"  # tabular: [[features]] in, a score out | text-embedding: a text in, an embedding out
    path: str = ""
    name: str = ""
    version: str = ""
    input: str = "features"
    outputs: tuple[str, ...] = ("score",)
    threshold: float = 0.5
    sha256: str = ""
    stats: str = ""  # JSON file with per-feature mean/std/min/max, used when not given inline
    watch_interval_s: float = 5.0  # hot swap: how often the model file is checked for a new version (0: never)
    tokenizer: str = ""  # text-embedding: the tokenizer.json that goes with the model
    max_tokens: int = 256  # text-embedding: longer texts are truncated to this many tokens
    bucket_rows: int = 64  # text-embedding: at most this many texts of similar length padded together
    bucket_tokens: int = 8192  # text-embedding: at most this many tokens, padding included, per bucket


@dataclass(frozen=True)
class BatchingSettings:
    max_batch: int = 4096  # records per ONNX Runtime call
    max_delay_ms: float = 5.0  # longest a record waits for its batch to fill
    clean_max_batch: int = 2000  # raw messages the clean stage takes at once
    max_in_flight: int = 4  # batches a stage may have sent and not yet seen acknowledged
    # Inference: batch sizes to cut at once when that many records are waiting (like Triton's
    # preferred_batch_size, e.g. the sizes a TensorRT engine was built for); else wait up to the delay.
    preferred_batch_sizes: tuple[int, ...] = ()
    # The inference stage's queue (records fetched, not yet in a batch; 0: two batches) and what
    # happens when it is full: "wait" (stop fetching; the backlog waits in Kafka) or "reject"
    # (dead-letter what arrives, reason code queue_full: bounded latency for the rest, replayable).
    max_queue_records: int = 0
    queue_policy: str = "wait"
    adapt_to_slo: bool = True  # steer the inference wait within [0, max_delay_ms] by slo.p99_latency_ms


@dataclass(frozen=True)
class RuntimeSettings:
    # "stages": clean, normalize and inference are separate agents (and consumer groups) joined
    # by internal topics, each scaled on its own. "chained": one agent runs the three in turn
    # on each batch of raw records (no internal hops: less latency and broker load).
    topology: str = "stages"
    device: str = "auto"
    intra_op_threads: int = 1
    inter_op_threads: int = 1
    drain_timeout_s: float = 30.0  # on SIGTERM: longest to finish in-flight batches before stopping
    device_id: int = 0  # which GPU (CUDA and TensorRT)
    fp16: bool = False  # TensorRT may build FP16 engines (faster; scores differ in the 3rd-4th digit)
    trt_cache_dir: str = ""  # TensorRT engine cache; empty: ~/.cache/streamflow/tensorrt
    io_binding: str = "auto"  # auto (on a GPU provider) | on | off: inputs copied once into bound buffers


@dataclass(frozen=True)
class KafkaSettings:
    bootstrap: str = ""  # empty: start the embedded broker (demo/up) or fail (worker)
    group_prefix: str = "streamflow"
    session_timeout_s: float = 6.0
    heartbeat_interval_s: float = 1.0
    fetch_max_wait_ms: int = 10
    linger_ms: float = 2.0
    commit_interval_s: float = 1.0
    delivery_timeout_s: float = 30.0  # librdkafka's own retries (message.timeout.ms); then ours
    retry_backoff_s: float = 0.5  # first wait before sending undelivered messages again; doubles
    retry_backoff_max_s: float = 30.0  # longest wait between retries (they go on until delivered)
    connect_timeout_s: float = 10.0
    max_message_bytes: int = 1_048_576
    # Security (see README "Security"); applied to every Kafka client streamflow creates.
    security_protocol: str = "PLAINTEXT"  # PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL
    ssl_cafile: str = ""  # PEM CA certificate(s) for the brokers (empty: the system's CAs)
    ssl_certfile: str = ""  # client certificate, PEM (mutual TLS)
    ssl_keyfile: str = ""  # its private key, PEM
    ssl_check_hostname: bool = True  # the broker's certificate must name the host connected to
    sasl_mechanism: str = ""  # PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512 | OAUTHBEARER
    sasl_username: str = ""
    sasl_password: Secret = Secret()
    sasl_oauth_token_url: str = ""  # OAUTHBEARER: OAuth 2 client-credentials token endpoint
    sasl_oauth_client_id: str = ""
    sasl_oauth_client_secret: Secret = Secret()
    sasl_oauth_scope: str = ""  # space-separated, optional


@dataclass(frozen=True)
class MetricsSettings:
    host: str = "127.0.0.1"
    port: int = 9108


@dataclass(frozen=True)
class SloSettings:
    """What the pipeline promises; exported as metrics so alert rules compare against them."""

    p99_latency_ms: float = 500.0  # end-to-end, raw message timestamp to result delivered
    max_dead_letter_ratio: float = 0.05  # dead letters / records, over 10 minutes
    max_lag_seconds: float = 60.0  # how far behind a consumer may fall


@dataclass(frozen=True)
class CollectorSettings:
    """``streamflow collect http``: where it listens and what it accepts."""

    host: str = "127.0.0.1"
    port: int = 8088
    token: Secret = Secret()  # when set, POST /records needs "Authorization: Bearer <token>"
    max_body_bytes: int = 1_048_576  # larger requests get 413 before their body is read


@dataclass(frozen=True)
class FeatureSpec:
    """One numeric input of the model, with its cleaning and normalization rules."""

    name: str
    type: str = "float"  # float | int
    required: bool = False
    default: float | None = None
    min: float | None = None
    max: float | None = None
    out_of_range: str = "reject"  # clip | reject
    normalize: tuple[str, ...] = ("zscore",)  # applied in order, e.g. ("log1p", "zscore")
    mean: float | None = None
    std: float | None = None
    scale_min: float | None = None
    scale_max: float | None = None


@dataclass(frozen=True)
class Settings:
    name: str
    source: str  # the pipeline file, for messages
    topics: TopicSettings
    input: InputSettings
    output: OutputSettings
    model: ModelSettings
    batching: BatchingSettings
    runtime: RuntimeSettings
    kafka: KafkaSettings
    metrics: MetricsSettings
    features: tuple[FeatureSpec, ...] = field(default_factory=tuple)
    # text-embedding: [labels] name = [example texts]; each result is labelled with the nearest
    # label's centroid (the mean embedding of its examples, computed at start-up).
    labels: tuple[tuple[str, tuple[str, ...]], ...] = ()
    limits: LimitSettings = field(default_factory=LimitSettings)
    collector: CollectorSettings = field(default_factory=CollectorSettings)
    slo: SloSettings = field(default_factory=SloSettings)

    @property
    def is_text(self) -> bool:
        return self.model.kind == "text-embedding"

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def cleaned_topic(self) -> str:
        return f"{self.name}.internal.cleaned"

    @property
    def normalized_topic(self) -> str:
        return f"{self.name}.internal.normalized"

    @property
    def internal_partitions(self) -> int:
        return self.topics.internal_partitions or self.topics.partitions

    def group_id(self, stage: str) -> str:
        return f"{self.kafka.group_prefix}-{self.name}-{stage}"


SECTIONS: dict[str, type] = {
    "topics": TopicSettings,
    "input": InputSettings,
    "limits": LimitSettings,
    "output": OutputSettings,
    "model": ModelSettings,
    "batching": BatchingSettings,
    "runtime": RuntimeSettings,
    "kafka": KafkaSettings,
    "metrics": MetricsSettings,
    "collector": CollectorSettings,
    "slo": SloSettings,
}
PATH_KEYS = {("input", "schema"), ("output", "schema"), ("model", "path"), ("model", "stats"), ("model", "tokenizer"),
             ("kafka", "ssl_cafile"), ("kafka", "ssl_certfile"), ("kafka", "ssl_keyfile")}


def _base_type(tp: Any) -> Any:
    """``float | None`` -> float; ``tuple[str, ...]`` -> tuple."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base_type(args[0])
    return typing.get_origin(tp) or tp


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert ``value`` (from TOML or an env string) to ``tp`` or raise ValueError naming ``where``."""
    base = _base_type(tp)
    if base is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if typing.get_args(tp)[:1] == (int,):
            if not isinstance(value, list):
                raise ValueError(f"{where}: expected a list of integers, got {value!r}")
            return tuple(_coerce(v, int, where) for v in value)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"{where}: expected a list of strings, got {value!r}")
        return tuple(value)
    if base is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
        raise ValueError(f"{where}: expected true or false, got {value!r}")
    if base is int:
        if isinstance(value, bool):
            raise ValueError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ValueError(f"{where}: expected an integer, got {value!r}")
    if base is float:
        if isinstance(value, bool):
            raise ValueError(f"{where}: expected a number, got {value!r}")
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ValueError(f"{where}: expected a number, got {value!r}")
    if base is Secret:
        if isinstance(value, str):
            return Secret(value)
        raise ValueError(f"{where}: expected a string (value not shown: it is a secret)")
    if base is str:
        if isinstance(value, str):
            return value
        raise ValueError(f"{where}: expected a string, got {value!r}")
    raise TypeError(f"unsupported settings type {tp!r}")  # pragma: no cover


def _unknown(key: str, known: list[str], where: str) -> str:
    hint = difflib.get_close_matches(key, known, n=1)
    return f"{where}: unknown key" + (f" (did you mean {hint[0]!r}?)" if hint else "")


def _build(cls: type, data: Mapping[str, Any], prefix: str, problems: list[str]) -> Any:
    hints = typing.get_type_hints(cls)
    known = [f.name for f in fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        where = f"{prefix}.{key}" if prefix else key
        if key not in known:
            problems.append(_unknown(key, known, where))
            continue
        try:
            kwargs[key] = _coerce(value, hints[key], where)
        except ValueError as exc:
            problems.append(str(exc))
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required field is missing
        problems.append(f"{prefix}: {exc}")
        return None


def env_overrides(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``STREAMFLOW_KAFKA_BOOTSTRAP=x`` -> ``{"kafka.bootstrap": "x"}`` for every known key."""
    environ = os.environ if environ is None else environ
    out: dict[str, str] = {}
    for section, cls in SECTIONS.items():
        for f in fields(cls):
            var = f"{ENV_PREFIX}{section}_{f.name}".upper()
            if var in environ:
                out[f"{section}.{f.name}"] = environ[var]
    return out


def pipeline_path_from_env(default: str) -> str:
    """The pipeline file: ``$STREAMFLOW_PIPELINE`` or ``default``."""
    return os.environ.get(f"{ENV_PREFIX}PIPELINE", default)


def load_settings(
    path: str | Path,
    overrides: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Read the pipeline file, apply env vars then CLI ``overrides``, validate everything."""
    settings, problems = collect_settings(path, overrides, environ=environ)
    if problems or settings is None:
        raise ConfigError(problems, source=str(path))
    return settings


def collect_settings(
    path: str | Path,
    overrides: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> tuple[Settings | None, list[str]]:
    """Like load_settings, but returns (settings built as far as possible, every problem found)."""
    path = Path(path)
    source = str(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return None, [f"pipeline file not found: {path}"]
    except tomllib.TOMLDecodeError as exc:
        return None, [f"not valid TOML: {exc}"]

    problems: list[str] = []
    layered: dict[str, Any] = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    for origin, layer in (("environment", env_overrides(environ)), ("command line", overrides or {})):
        for dotted, value in layer.items():
            if dotted == "name":
                layered["name"] = value
                continue
            section, _, key = dotted.partition(".")
            if section not in SECTIONS or not key:
                problems.append(f"{dotted} (from the {origin}): unknown setting")
                continue
            layered.setdefault(section, {})[key] = value

    name = layered.pop("name", None)
    if not isinstance(name, str) or not name.replace("-", "").replace("_", "").isalnum():
        problems.append(f"name: expected the pipeline's name (letters, digits, - and _), got {name!r}")
        name = "invalid"
    feature_tables = layered.pop("features", [])
    label_table = layered.pop("labels", {})
    sections: dict[str, Any] = {}
    for section, cls in SECTIONS.items():
        data = layered.pop(section, {})
        if not isinstance(data, dict):
            problems.append(f"{section}: expected a table")
            data = {}
        if section in {sec for sec, _ in PATH_KEYS}:
            data = {k: _resolve(path, v) if (section, k) in PATH_KEYS and isinstance(v, str) and v else v
                    for k, v in data.items()}
        sections[section] = _build(cls, data, section, problems) or cls()
    for key in layered:
        problems.append(_unknown(key, ["name", "features", "labels", *SECTIONS], key))

    stats = _load_stats(sections["model"].stats, problems)
    text = sections["model"].kind == "text-embedding"
    features = [] if text and not feature_tables else _build_features(feature_tables, stats, problems)
    labels = _build_labels(label_table, problems)
    settings = Settings(name=name, source=source, features=tuple(features), labels=labels, **sections)
    problems.extend(check(settings))
    return settings, problems


def _resolve(pipeline: Path, value: str) -> str:
    p = Path(value)
    return str(p if p.is_absolute() else (pipeline.parent / p).resolve())


def _load_stats(path: str, problems: list[str]) -> dict[str, dict[str, float]]:
    if not path:
        return {}
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        problems.append(f"model.stats: file not found: {path}")
        return {}
    except json.JSONDecodeError as exc:
        problems.append(f"model.stats: not valid JSON ({path}): {exc}")
        return {}
    feats = data.get("features", data)
    if not isinstance(feats, dict):
        problems.append(f"model.stats: expected an object of per-feature statistics in {path}")
        return {}
    return feats


def _build_labels(table: Any, problems: list[str]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """``[labels]`` name = ["example text", ...] -> ((name, examples), ...), in file order."""
    if not isinstance(table, dict):
        problems.append("labels: expected a table of label = [example texts]")
        return ()
    out = []
    for name, examples in table.items():
        if not isinstance(examples, list) or not examples or \
                not all(isinstance(e, str) and e.strip() for e in examples):
            problems.append(f"labels.{name}: expected a non-empty list of non-empty example texts")
            continue
        out.append((name, tuple(examples)))
    return tuple(out)


def _build_features(
    tables: Any, stats: Mapping[str, Mapping[str, float]], problems: list[str]
) -> list[FeatureSpec]:
    if not isinstance(tables, list) or not tables:
        problems.append("features: expected at least one [[features]] table")
        return []
    out: list[FeatureSpec] = []
    for i, table in enumerate(tables):
        where = f"features[{i}]"
        if not isinstance(table, dict):
            problems.append(f"{where}: expected a table")
            continue
        table = dict(table)
        name = table.get("name")
        if isinstance(name, str):
            where = f"features[{i}] ({name})"
        norm = table.get("normalize", "zscore")
        if isinstance(norm, str):
            table["normalize"] = [n.strip() for n in norm.split("+")]
        known_stats = stats.get(name, {}) if isinstance(name, str) else {}
        for key in ("mean", "std", "scale_min", "scale_max"):
            if key not in table and key in known_stats:
                table[key] = known_stats[key]
        spec = _build(FeatureSpec, table, where, problems)
        if spec is not None:
            out.append(spec)
    return out


def check(s: Settings) -> list[str]:
    """Static checks that need no other file: ranges, enums, stats present."""
    p: list[str] = []
    for key in ("raw", "scored", "dlq"):
        if not getattr(s.topics, key):
            p.append(f"topics.{key}: a topic name is required")
    if len({s.topics.raw, s.topics.scored, s.topics.dlq}) != 3:
        p.append("topics: raw, scored and dlq must be three different topics")
    if s.topics.partitions < 1:
        p.append(f"topics.partitions: must be >= 1, got {s.topics.partitions}")
    if s.input.format not in FORMATS:
        p.append(f"input.format: must be one of {', '.join(FORMATS)}, got {s.input.format!r}")
    lim = s.limits
    for key in ("max_message_bytes", "max_string_length", "max_array_length"):
        if getattr(lim, key) < 1:
            p.append(f"limits.{key}: must be >= 1, got {getattr(lim, key)}")
    if lim.max_message_bytes > s.kafka.max_message_bytes:
        # Accepted records travel on in internal batches and dead letters: our producer must take them.
        p.append(f"limits.max_message_bytes: {lim.max_message_bytes} is more than kafka.max_message_bytes "
                 f"{s.kafka.max_message_bytes}, the largest message streamflow produces (raise both)")
    if s.output.format not in ("avro", "json"):
        p.append(f"output.format: must be avro or json, got {s.output.format!r}")
    if s.model.kind not in MODEL_KINDS:
        p.append(f"model.kind: must be one of {', '.join(MODEL_KINDS)}, got {s.model.kind!r}")
    paths = ("input.schema", "output.schema", "model.path") + (("model.tokenizer",) if s.is_text else ())
    if s.is_text:
        if not s.input.text_field:
            p.append("input.text_field: model.kind = text-embedding needs the field holding the text")
        if not 2 <= s.model.max_tokens <= 512:
            p.append(f"model.max_tokens: must be within 2..512, got {s.model.max_tokens}")
        if s.model.bucket_rows < 1:
            p.append(f"model.bucket_rows: must be >= 1, got {s.model.bucket_rows}")
        if s.model.bucket_tokens < s.model.max_tokens:
            p.append(f"model.bucket_tokens: must be >= model.max_tokens ({s.model.max_tokens}), "
                     f"got {s.model.bucket_tokens}")
        if len(s.labels) < 2:
            p.append("labels: model.kind = text-embedding needs at least two labels, each with example texts")
        if s.features:
            p.append("features: a text-embedding model takes the text field, not [[features]]")
    elif s.labels:
        p.append("labels: only used with model.kind = text-embedding")
    for key in paths:
        section, _, attr = key.partition(".")
        value = getattr(getattr(s, section), attr)
        if not value:
            p.append(f"{key}: a path is required")
        elif not Path(value).is_file():
            p.append(f"{key}: file not found: {value}")
    if not 0.0 <= s.model.threshold <= 1.0:
        p.append(f"model.threshold: must be within [0, 1], got {s.model.threshold}")
    if not s.model.outputs:
        p.append("model.outputs: name at least one output")
    if s.model.watch_interval_s < 0:
        p.append(f"model.watch_interval_s: must be >= 0 (0 turns hot swap off), got {s.model.watch_interval_s}")
    if s.model.sha256 and (len(s.model.sha256) != 64 or not all(c in "0123456789abcdef" for c in s.model.sha256.lower())):
        p.append("model.sha256: expected 64 hexadecimal digits")
    b = s.batching
    if b.max_batch < 1:
        p.append(f"batching.max_batch: must be >= 1, got {b.max_batch}")
    if b.clean_max_batch < 1:
        p.append(f"batching.clean_max_batch: must be >= 1, got {b.clean_max_batch}")
    if s.runtime.topology not in ("stages", "chained"):
        p.append(f"runtime.topology: must be 'stages' or 'chained', got {s.runtime.topology!r}")
    if any(not 1 <= n <= b.max_batch for n in b.preferred_batch_sizes):
        p.append(f"batching.preferred_batch_sizes: each must be within 1..batching.max_batch ({b.max_batch}), "
                 f"got {list(b.preferred_batch_sizes)}")
    if b.max_queue_records < 0:
        p.append(f"batching.max_queue_records: must be >= 0 (0: two batches), got {b.max_queue_records}")
    if b.queue_policy not in ("wait", "reject"):
        p.append(f"batching.queue_policy: must be wait or reject, got {b.queue_policy!r}")
    if b.max_in_flight < 1:
        p.append(f"batching.max_in_flight: must be >= 1, got {b.max_in_flight}")
    if not 0.0 <= b.max_delay_ms <= 60_000:
        p.append(f"batching.max_delay_ms: must be within [0, 60000], got {b.max_delay_ms}")
    if s.runtime.device not in DEVICES:
        p.append(f"runtime.device: must be one of {', '.join(DEVICES)}, got {s.runtime.device!r}")
    if s.runtime.device_id < 0:
        p.append(f"runtime.device_id: must be >= 0, got {s.runtime.device_id}")
    if s.runtime.io_binding not in ("auto", "on", "off"):
        p.append(f"runtime.io_binding: must be auto, on or off, got {s.runtime.io_binding!r}")
    if not s.runtime.drain_timeout_s > 0:
        p.append(f"runtime.drain_timeout_s: must be > 0, got {s.runtime.drain_timeout_s}")
    if s.runtime.intra_op_threads < 0 or s.runtime.inter_op_threads < 0:
        p.append("runtime: thread counts must be >= 0 (0 lets ONNX Runtime choose)")
    if not 0 < s.metrics.port < 65536:
        p.append(f"metrics.port: must be within 1..65535, got {s.metrics.port}")
    if not 0 <= s.collector.port < 65536:
        p.append(f"collector.port: must be within 0..65535 (0: any free port), got {s.collector.port}")
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
        p.append(f"slo.max_dead_letter_ratio: must be within (0, 1], got {s.slo.max_dead_letter_ratio}")
    if not s.slo.max_lag_seconds > 0:
        p.append(f"slo.max_lag_seconds: must be > 0, got {s.slo.max_lag_seconds}")
    if s.kafka.fetch_max_wait_ms < 0:
        p.append("kafka.fetch_max_wait_ms: must be >= 0")
    p.extend(check_kafka_security(s.kafka))
    seen: set[str] = set()
    for i, f in enumerate(s.features):
        where = f"features[{i}] ({f.name})"
        if f.name in seen:
            p.append(f"{where}: duplicate feature name")
        seen.add(f.name)
        if f.type not in ("float", "int"):
            p.append(f"{where}.type: must be float or int, got {f.type!r}")
        if f.out_of_range not in ("clip", "reject"):
            p.append(f"{where}.out_of_range: must be clip or reject, got {f.out_of_range!r}")
        if f.out_of_range == "clip" and (f.min is None or f.max is None):
            p.append(f"{where}.out_of_range: clip needs both min and max")
        if f.min is not None and f.max is not None and not f.min < f.max:
            p.append(f"{where}: min must be < max")
        if not f.required and f.default is None:
            p.append(f"{where}.default: an optional feature needs a default (or set required = true)")
        if f.default is not None and not math.isfinite(f.default):
            p.append(f"{where}.default: must be a finite number")
        steps = f.normalize
        for step in steps:
            if step not in NORMALIZERS:
                p.append(f"{where}.normalize: unknown step {step!r} (one of {', '.join(NORMALIZERS)}, joined with +)")
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
                p.append(f"{where}: minmax needs scale_min and scale_max (inline or in model.stats)")
            elif not f.scale_min < f.scale_max:
                p.append(f"{where}: scale_min must be < scale_max")
        if sum(st in ("zscore", "minmax") for st in steps) > 1:
            p.append(f"{where}.normalize: use at most one of zscore and minmax")
    return p


def check_kafka_security(k: KafkaSettings) -> list[str]:
    """TLS and SASL settings: a protocol that needs a mechanism or credentials gets them, files exist.

    Credentials alone are inert (the protocol and mechanism decide what is used), so a shared
    environment may set them everywhere; a mechanism or TLS file under a protocol that does
    not use it is an error, as it says the user expects something that would not happen.
    Messages never contain a secret's value."""
    p: list[str] = []
    proto = k.security_protocol
    if proto not in SECURITY_PROTOCOLS:
        p.append(f"kafka.security_protocol: must be one of {', '.join(SECURITY_PROTOCOLS)}, got {proto!r}")
        return p
    sasl, tls = proto.startswith("SASL_"), proto.endswith("SSL")
    if k.sasl_mechanism and k.sasl_mechanism not in SASL_MECHANISMS:
        p.append(f"kafka.sasl_mechanism: must be one of {', '.join(SASL_MECHANISMS)}, got {k.sasl_mechanism!r}")
    elif sasl and not k.sasl_mechanism:
        p.append(f"kafka.sasl_mechanism: kafka.security_protocol = {proto} needs a mechanism "
                 f"({', '.join(SASL_MECHANISMS)})")
    elif k.sasl_mechanism and not sasl:
        p.append(f"kafka.sasl_mechanism: {k.sasl_mechanism} is set but kafka.security_protocol = {proto} "
                 "does not use SASL (SASL_PLAINTEXT or SASL_SSL)")
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
    for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        path = getattr(k, key)
        if not path:
            continue
        if not tls:
            p.append(f"kafka.{key}: is set but kafka.security_protocol = {proto} does not use TLS "
                     "(SSL or SASL_SSL)")
        elif not Path(path).is_file():
            p.append(f"kafka.{key}: file not found: {path}")
    if k.ssl_keyfile and not k.ssl_certfile:
        p.append("kafka.ssl_keyfile: needs kafka.ssl_certfile (the client certificate it belongs to)")
    return p


def with_overrides(settings: Settings, **sections: Mapping[str, Any]) -> Settings:
    """A copy with some section fields replaced (for tests and the embedded broker address)."""
    changes = {name: replace(getattr(settings, name), **values) for name, values in sections.items()}
    return replace(settings, **changes)
