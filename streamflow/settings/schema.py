"""The settings schema: one frozen dataclass per pipeline-file section, and ``Settings``.

Plain data, no I/O: every module may import it. Each field's type says what the loader
accepts; an enumerated string is a ``Literal`` alias declared once below, and the loader
checks any ``Literal`` generically (``streamflow.settings.loading``), so a choice is written
in one place. The tuples of choices (``DEVICES``, ...) are derived from those aliases.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, get_args

# The enumerated settings. Add a choice here and the loader accepts it.
InputFormat = Literal["avro", "json", "auto"]  # auto: JSON when the value starts with '{'
OutputFormat = Literal["avro", "json"]
ModelKindName = Literal["tabular", "text-embedding"]
NormalizeStep = Literal["zscore", "minmax", "log1p", "none"]
# float, int: numbers; bool: true/false as 1/0; category: a string from ``vocabulary``;
# hour_of_day, day_of_week: parts (UTC) of an epoch-ms field (``source``, default the timestamp)
FeatureType = Literal["float", "int", "bool", "category", "hour_of_day", "day_of_week"]
CategoryEncoding = Literal["one_hot", "index"]  # a column per vocabulary value | the value's index
UnknownCategory = Literal["reject", "default"]  # a value outside the vocabulary
# post-processing of a model output into result fields ([[outputs]])
PostProcess = Literal["identity", "threshold", "argmax", "top_k", "softmax"]
# what a result carries besides the key, the timestamp and the model's outputs ([result])
ResultMetadata = Literal[
    "model_name", "model_version", "latency_ms", "source_topic", "source_partition",
    "source_offset", "ingest_ms",
]  # fmt: skip
Pooling = Literal["none", "mean", "cls", "max"]  # text-embedding: how token vectors become one
TransformPoint = Literal["after_clean", "after_normalize", "after_model"]
OutOfRange = Literal["clip", "reject"]
QueuePolicy = Literal["wait", "reject"]
Topology = Literal["stages", "chained"]
Device = Literal["auto", "cpu", "cuda", "tensorrt"]
IoBinding = Literal["auto", "on", "off"]
FetchClient = Literal["aiokafka", "librdkafka"]
SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"]
SaslMechanismOrNone = Literal["", SaslMechanism]  # empty: no SASL

NORMALIZERS: tuple[NormalizeStep, ...] = get_args(NormalizeStep)
DEVICES: tuple[Device, ...] = get_args(Device)
FORMATS: tuple[InputFormat, ...] = get_args(InputFormat)
MODEL_KINDS: tuple[ModelKindName, ...] = get_args(ModelKindName)
SECURITY_PROTOCOLS: tuple[SecurityProtocol, ...] = get_args(SecurityProtocol)
SASL_MECHANISMS: tuple[SaslMechanism, ...] = get_args(SaslMechanism)
# A text-embedding model's inputs, int64 [batch, tokens].
TEXT_INPUTS = ("input_ids", "attention_mask")


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
    raw: str = ""  # the topic the records arrive on (required)
    scored: str = ""  # the topic results are written to (required)
    # the dead-letter topic: records refused at any step, the reason in headers (required)
    dlq: str = ""
    # partitions of raw, scored and dlq when streamflow creates them (an existing topic keeps
    # its own); also the most consumers one step's group can use
    partitions: int = 4
    replication: int = 1  # replication factor of every topic streamflow creates
    internal_partitions: int = 0  # 0: same as partitions
    # false: the application may not create topics (no create rights on the cluster): every
    # topic must exist, and a missing one stops start-up naming it
    create: bool = True
    # Topic configs (Kafka's topic-level properties: retention.ms, cleanup.policy, ...) the raw
    # topic is created with, when streamflow creates it; an existing topic is left as it is.
    raw_configs: dict[str, str | int | float | bool] = field(default_factory=dict)
    # the same for the scored topic
    scored_configs: dict[str, str | int | float | bool] = field(default_factory=dict)
    # the same for the dead-letter topic
    dlq_configs: dict[str, str | int | float | bool] = field(default_factory=dict)
    # the same for the internal topics: they get compression.type = zstd and cleanup.policy =
    # delete unless set here, and the stages that write them compress with that codec
    # (kafka/config.py: INTERNAL_TOPIC_CONFIGS)
    internal_configs: dict[str, str | int | float | bool] = field(default_factory=dict)


@dataclass(frozen=True)
class InputSettings:
    # Avro schema (.avsc) of the raw records, JSON ones included: their fields and types (required)
    schema: str = ""
    # auto: a message that starts like a JSON object ('{') is read as JSON, any other as Avro
    format: InputFormat = "auto"
    # the record's id field (a string, required in every record), copied onto each result; the
    # collectors and `streamflow produce` key raw messages by it
    key_field: str = "device_id"
    # the record's event time field, epoch ms (int or long), copied onto each result
    timestamp_field: str = "timestamp"
    # a Confluent schema registry: raw values in its wire format are read with the writer's
    # schema; Avro results are registered as <topics.scored>-value and sent in that format
    schema_registry_url: str = ""
    text_field: str = "text"  # model.kind = "text-embedding": the field holding the text


@dataclass(frozen=True)
class SchemaRegistrySettings:
    """How the schema-registry client (``input.schema_registry_url``) authenticates and
    connects: HTTP Basic or a bearer token, and TLS. Secrets are masked like the Kafka ones."""

    username: str = ""  # HTTP Basic: with password
    password: Secret = Secret()  # HTTP Basic: with username
    bearer_token: Secret = Secret()  # a static bearer token (Authorization: Bearer ...)
    # bearer token: the registry's logical cluster (Confluent Cloud: lsrc-...), sent as
    # target-sr-cluster, when the registry asks for it
    logical_cluster: str = ""
    identity_pool_id: str = ""  # bearer token: the identity pool, sent when set
    ssl_cafile: str = ""  # PEM CA certificate(s) for an https registry (empty: the system's CAs)
    ssl_certfile: str = ""  # client certificate, PEM (mutual TLS)
    ssl_keyfile: str = ""  # its private key, PEM
    timeout_s: float = 10.0  # one request to the registry
    # properties of confluent-kafka's SchemaRegistryClient passed through as they are (e.g.
    # bearer.auth.credentials.source = "OAUTHBEARER" and its bearer.auth.* keys); url and the
    # properties named above are refused here
    client: dict[str, str | int | float | bool] = field(default_factory=dict)


@dataclass(frozen=True)
class LimitSettings:
    """What one input record may contain; anything larger is dead-lettered before it is read.

    ``max_message_bytes`` bounds key + value. A length prefix (an Avro string or bytes, an
    array or map block) is checked against these limits before anything is allocated.
    """

    max_message_bytes: int = 1_048_576  # key + value of one raw message; <= kafka.max_message_bytes
    # bytes of an Avro string/bytes; characters of a JSON string field
    max_string_length: int = 4096
    # items of one Avro array or map (input or registry writer schema)
    max_array_length: int = 4096


@dataclass(frozen=True)
class OutputSettings:
    # Avro schema (.avsc) results are written with; empty: the one the pipeline declares
    # ([[outputs]] and [result]; `streamflow schema result` prints it)
    schema: str = ""
    format: OutputFormat = "avro"  # json: the same fields, in the same order


@dataclass(frozen=True)
class ModelSettings:
    # tabular: [[features]] in, a score out | text-embedding: a text in, an embedding out
    kind: ModelKindName = "tabular"
    path: str = ""  # the ONNX model file (required); hot swap watches it
    # in results, headers and metrics; empty: the file's metadata name, else its file name
    name: str = ""
    # in results and headers; empty: the file's metadata version, else "0"
    version: str = ""
    input: str = "features"  # tabular: the model's float input [batch, columns] fed the features
    # only the first is used: the output a tabular pipeline without [[outputs]] makes score and
    # label of, and that an [[outputs]] table without a tensor reads; text-embedding: the embedding
    outputs: tuple[str, ...] = ("score",)
    # tabular without [[outputs]]: the label is "anomaly" when the score >= this, else "normal"
    threshold: float = 0.5
    # the model file's sha256 (64 hex digits): another file is refused, at start-up and on hot
    # swap; empty: any file
    sha256: str = ""
    # JSON file of per-feature training statistics: mean, std, scale_min and scale_max (used
    # when not given inline) and the drift bins of [monitoring]
    stats: str = ""
    # hot swap: how often the model file is checked for a new version (0: never)
    watch_interval_s: float = 5.0
    tokenizer: str = ""  # text-embedding: the tokenizer.json that goes with the model
    max_tokens: int = 256  # text-embedding: longer texts are truncated to this many tokens
    # text-embedding: at most this many texts of similar length padded together
    bucket_rows: int = 64
    # text-embedding: at most this many tokens, padding included, per bucket
    bucket_tokens: int = 8192
    # text-embedding: "none" when the graph pools (output [batch, dim]); mean | cls | max when its
    # output is the token vectors (last_hidden_state [batch, tokens, dim])
    pooling: Pooling = "none"
    l2_normalize: bool = False  # text-embedding: scale each embedding to unit length


@dataclass(frozen=True)
class BatchingSettings:
    max_batch: int = 4096  # records per ONNX Runtime call
    # longest a record waits for its batch to fill; 0: a batch is what waits when the model is
    # free (under load batches grow by themselves while the previous one runs). A wait pays on a
    # GPU whose throughput grows with the batch; on a CPU model it only adds latency.
    max_delay_ms: float = 0.0
    clean_max_batch: int = 2000  # raw messages the clean stage takes at once
    max_in_flight: int = 4  # batches a stage may have sent and not yet seen acknowledged
    # Inference: batch sizes to cut at once when that many records are waiting (like Triton's
    # preferred_batch_size, e.g. the sizes a TensorRT engine was built for); else wait up to
    # the delay.
    preferred_batch_sizes: tuple[int, ...] = ()
    # the inference stage's queue: records fetched, not yet in a batch (0: two batches)
    max_queue_records: int = 0
    # when that queue is full: "wait" (stop fetching; the backlog waits in Kafka) or "reject"
    # (dead-letter what arrives, reason code queue_full: bounded latency for the rest, replayable)
    queue_policy: QueuePolicy = "wait"
    # steer the inference wait within [0, max_delay_ms] by slo.p99_latency_ms
    adapt_to_slo: bool = True


@dataclass(frozen=True)
class RuntimeSettings:
    # "stages": clean, normalize and inference are separate agents (and consumer groups) joined
    # by internal topics, each scaled on its own. "chained": one agent runs the three in turn
    # on each batch of raw records (no internal hops: less latency and broker load).
    topology: Topology = "stages"
    # auto: TensorRT, then CUDA, then CPU, among the providers this ONNX Runtime build has;
    # cuda and tensorrt refuse to start without a GPU
    device: Device = "auto"
    intra_op_threads: int = 1  # ONNX Runtime threads within one operator (0: ORT's default)
    # ONNX Runtime threads running operators side by side: no effect, as the session runs them
    # one after another (ORT's default sequential execution mode)
    inter_op_threads: int = 1
    # Python's young-generation collection threshold in the stage processes (net new container
    # objects between collections). Higher: less collector CPU, longer pauses (each walks about
    # this many objects; streamflow_gc_pause_seconds). Start-up objects are frozen out of
    # collections too; 0 leaves Python's collector as it comes (700, nothing frozen), which
    # took a quarter of a stage's CPU (agents/heap.py)
    gc_threshold: int = 20_000
    drain_timeout_s: float = 30.0  # on SIGTERM: longest to finish in-flight batches before stopping
    device_id: int = 0  # which GPU (CUDA and TensorRT)
    # TensorRT may build FP16 engines (faster; scores differ in the 3rd-4th digit)
    fp16: bool = False
    trt_cache_dir: str = ""  # TensorRT engine cache; empty: ~/.cache/streamflow/tensorrt
    # auto (on a GPU provider) | on | off: inputs copied once into bound buffers
    io_binding: IoBinding = "auto"


@dataclass(frozen=True)
class KafkaSettings:
    bootstrap: str = ""  # empty: start the embedded broker (demo/up) or fail (worker)
    group_prefix: str = "streamflow"  # each step's consumer group is <group_prefix>-<name>-<step>
    # the agents' consumer-group session: a member not heard from for this long loses its
    # partitions to the others
    session_timeout_s: float = 6.0
    # how often the agents' consumers heartbeat to their group (less than session_timeout_s)
    heartbeat_interval_s: float = 1.0
    # longest the broker holds an agent's fetch while no new data arrives. The embedded broker
    # answers a parked fetch only at this deadline, so each hop may wait up to it: keep it short
    # there. Apache Kafka answers as soon as data arrives: 100-500 costs no latency and cuts an
    # idle stage's fetching (at 5: ~200 fetches/s, 7% of a core in the stage, 6% in the broker).
    # While a consumer is behind (records past its position) its fetches wait up to 500: the
    # embedded broker cuts a fetch off at its deadline while it scans a deep partition
    fetch_max_wait_ms: int = 5
    # while a caught-up agent's fetches keep coming back empty, each next one waits twice as long
    # (from the second on), up to this; one that brings records goes back to fetch_max_wait_ms.
    # At 20 an idle stage fetches a quarter as often (measured: 15% -> 6.5% of a core per idle
    # stage, broker 30% -> 16%); a record that arrives during a longer wait may wait for it on the
    # embedded broker, not on Apache Kafka. 0, or not above fetch_max_wait_ms: always
    # fetch_max_wait_ms
    fetch_idle_max_wait_ms: int = 20
    # the client the agents fetch records with: aiokafka (faust's) | librdkafka. Either way
    # faust's aiokafka consumer keeps the group: membership, assignment, commits. librdkafka
    # fetches and parses in C threads, out of the Python interpreter's lock; it waits
    # fetch_max_wait_ms per fetch (fetch_idle_max_wait_ms and the wait while behind are
    # aiokafka's)
    fetch_client: FetchClient = "aiokafka"
    # how long a producer waits to fill a batch (librdkafka linger.ms); the producers of the
    # collectors, `streamflow produce` and the demo's feed use 5 unless [kafka.producer] sets it
    linger_ms: float = 2.0
    # how often the agents commit the offsets whose output the broker has acknowledged: a
    # crash repeats about this much input (docs/guarantees.md)
    commit_interval_s: float = 1.0
    delivery_timeout_s: float = 30.0  # librdkafka's own retries (message.timeout.ms); then ours
    retry_backoff_s: float = 0.5  # first wait before sending undelivered messages again; doubles
    retry_backoff_max_s: float = 30.0  # longest wait between retries (they go on until delivered)
    # start-up waits this long for a broker to answer; also a producer's connection setup timeout
    connect_timeout_s: float = 10.0
    # the largest key + value streamflow produces (producers allow at least 64 KiB more, for
    # headers); a raw message over it is dead-lettered cut to its first 64 KiB
    max_message_bytes: int = 1_048_576
    # Security (docs/security.md); applied to every Kafka client streamflow creates.
    security_protocol: SecurityProtocol = "PLAINTEXT"  # PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL
    ssl_cafile: str = ""  # PEM CA certificate(s) for the brokers (empty: the system's CAs)
    ssl_certfile: str = ""  # client certificate, PEM (mutual TLS)
    ssl_keyfile: str = ""  # its private key, PEM
    ssl_check_hostname: bool = True  # the broker's certificate must name the host connected to
    # how a SASL_PLAINTEXT or SASL_SSL client authenticates; empty: no SASL
    sasl_mechanism: SaslMechanismOrNone = ""
    sasl_username: str = ""  # PLAIN, SCRAM: the user name
    sasl_password: Secret = Secret()  # PLAIN, SCRAM: its password
    sasl_oauth_token_url: str = ""  # OAUTHBEARER: OAuth 2 client-credentials token endpoint
    sasl_oauth_client_id: str = ""  # OAUTHBEARER: the client id sent to the token endpoint
    sasl_oauth_client_secret: Secret = Secret()  # OAUTHBEARER: that client's secret
    sasl_oauth_scope: str = ""  # space-separated, optional
    # librdkafka properties every producer takes as they are ([kafka.producer]). Properties
    # streamflow's guarantees rest on are refused, here and in consumer and admin.
    producer: dict[str, str | int | float | bool] = field(default_factory=dict)
    # consumer properties ([kafka.consumer]): the CLI's librdkafka consumers take them as they
    # are; the agents' consumer (aiokafka, through faust) takes those it has an equivalent for
    # (kafka/config.py: AGENT_CONSUMER), the others stop start-up naming the key
    consumer: dict[str, str | int | float | bool] = field(default_factory=dict)
    # librdkafka properties the admin clients (topic creation, metadata) take as they are
    admin: dict[str, str | int | float | bool] = field(default_factory=dict)


@dataclass(frozen=True)
class MetricsSettings:
    # address the Prometheus metrics endpoint (/metrics) of a worker or collector binds
    host: str = "127.0.0.1"
    port: int = 9108  # its port (--metrics-port)


@dataclass(frozen=True)
class SloSettings:
    """What the pipeline promises; exported as metrics so alert rules compare against them."""

    p99_latency_ms: float = 500.0  # end-to-end, raw message timestamp to result delivered
    max_dead_letter_ratio: float = 0.05  # dead letters / records, over 10 minutes
    max_lag_seconds: float = 60.0  # how far behind a consumer may fall


@dataclass(frozen=True)
class CollectorSettings:
    """``streamflow collect http``: where it listens and what it accepts; what
    ``collect synthetic`` generates."""

    host: str = "127.0.0.1"  # address it listens on; it warns when not loopback and no token is set
    port: int = 8088  # its port (0: any free port)
    token: Secret = Secret()  # when set, POST /records needs "Authorization: Bearer <token>"
    max_body_bytes: int = 1_048_576  # larger requests get 413 before their body is read
    # HTTPS: the server's certificate (chain), PEM; with tls_keyfile (both or neither)
    tls_certfile: str = ""
    tls_keyfile: str = ""  # HTTPS: the certificate's private key, PEM
    tls_client_cafile: str = ""  # mutual TLS: clients need a certificate signed by these CAs
    # `streamflow collect synthetic` and the demo: "module:Class" (beside the pipeline file, or
    # on PYTHONPATH) with TelemetryGenerator's interface; empty: the model kind's own records
    synthetic: str = ""


@dataclass(frozen=True)
class FeatureSpec:
    """One input of the model, with its cleaning and normalization rules.

    A ``category`` feature takes ``len(vocabulary)`` model columns when one-hot encoded; every
    other feature takes one."""

    # its name: the record field it is read from, unless it is a time part (read from source)
    # or derived; the [[features]] tables are in the model's input order
    name: str
    # how the value is read: a number, true/false as 1/0, a vocabulary value, or a part (UTC)
    # of an epoch-ms field (day_of_week: Monday is 0)
    type: FeatureType = "float"
    # a record without it is dead-lettered (missing_required); else `default` fills it in
    required: bool = False
    default: float | str | bool | None = None  # a number; a vocabulary value; true/false
    min: float | None = None  # the lowest valid value (numbers and time parts); unset: none
    max: float | None = None  # the highest valid value; unset: none
    # a value outside [min, max]: clip it to the bound (needs both) or dead-letter the record
    out_of_range: OutOfRange = "reject"
    # applied in order, e.g. ["log1p", "zscore"] or "log1p+zscore"; a feature whose type is
    # not float or int defaults to "none"
    normalize: tuple[NormalizeStep, ...] = ("zscore",)
    # zscore: (value - mean) / std, the value after log1p when that is listed; unset: model.stats
    mean: float | None = None
    std: float | None = None  # zscore: > 0; unset: model.stats
    # minmax: (value - scale_min) / (scale_max - scale_min), after log1p when listed; unset:
    # model.stats
    scale_min: float | None = None
    scale_max: float | None = None  # minmax: > scale_min; unset: model.stats
    vocabulary: tuple[str, ...] = ()  # category: its values, in the model's column order
    # category: a model column per vocabulary value (one_hot) or one holding the value's index
    encoding: CategoryEncoding = "one_hot"
    unknown: UnknownCategory = (
        "reject"  # category: a value outside the vocabulary is dead-lettered or takes the default
    )
    source: str = ""  # hour_of_day, day_of_week: the epoch-ms field; empty: input.timestamp_field
    derived: bool = False  # not in the record: an after_clean [[transforms]] function computes it

    @property
    def field(self) -> str:
        """The record field it is read from (empty for a derived feature)."""
        if self.derived:
            return ""
        return self.source if self.type in ("hour_of_day", "day_of_week") else self.name

    @property
    def width(self) -> int:
        """Model input columns it takes."""
        if self.type == "category" and self.encoding == "one_hot":
            return len(self.vocabulary)
        return 1


@dataclass(frozen=True)
class OutputSpec:
    """One result field (or a group of them) made from a model output: ``[[outputs]]``."""

    field: str  # the result field; a per-class output gives one field per label: <field>_<label>
    tensor: str = ""  # the model output it reads; empty: model.outputs[0]
    # what it makes of the output: the values as they are, a label by threshold, the label of
    # the largest value (argmax) or of the k largest (top_k), or the values after a softmax
    post: PostProcess = "identity"
    # class names in the tensor's column order; for an int64 label tensor, index -> name
    labels: tuple[str, ...] = ()
    threshold: float = 0.5  # threshold: labels[1] when the value >= threshold, else labels[0]
    column: int = -1  # threshold on a [batch, C] tensor: its column (-1: the last one)
    k: int = 3  # top_k: how many labels
    score_field: str = ""  # argmax, top_k: also write the winning probability (or top k) here


@dataclass(frozen=True)
class ResultSettings:
    """What a result record carries besides the key, the timestamp and the model's outputs."""

    pass_through: tuple[str, ...] = ()  # input fields copied onto each result, e.g. rack, status
    # fields after the pass-through ones, in this order: the model's name and version,
    # latency_ms (the raw message's Kafka timestamp to the result), the raw message's topic,
    # partition and offset, and ingest_ms (its Kafka timestamp)
    metadata: tuple[ResultMetadata, ...] = ("model_name", "model_version", "latency_ms")


@dataclass(frozen=True)
class MonitoringSettings:
    """Model monitoring: input drift against the training statistics (``model.stats``)."""

    drift: bool = True  # a population stability index per feature (needs bins in model.stats)
    drift_window: int = 10000  # over the last this many records scored
    max_input_psi: float = 0.25  # exported like the [slo]; StreamflowInputDrift fires above it


@dataclass(frozen=True)
class StoreSettings:
    """The store step: results (and dead letters) as Parquet, exactly once (``streamflow/store``).

    Knob names follow Kafka Connect's S3 sink: a file is published when it holds ``flush_size``
    rows or ``flush_bytes`` bytes, when its records span ``rotate_interval_ms`` of record time
    (and always at an hour boundary: files are filed by hour), or when it has been open for
    ``rotate_schedule_interval_ms`` of wall-clock time, so a quiet partition still lands."""

    # a folder (relative: to the working directory, unlike the pipeline's file paths), or
    # s3://bucket/prefix; empty: no store step (the demo sets one)
    path: str = ""
    flush_size: int = 50_000  # rows per file
    flush_bytes: int = 16_777_216  # bytes of decoded rows per file (about; Parquet is smaller)
    rotate_interval_ms: int = 3_600_000  # record time one file may span
    rotate_schedule_interval_ms: int = 10_000  # wall-clock age at which an open file is published
    row_group_rows: int = 16_384  # rows per Parquet row group
    # Parquet codec of the files (and of `streamflow store compact`), as pyarrow names them:
    # zstd, snappy, gzip, lz4, brotli, none
    compression: str = "zstd"
    retry_backoff_s: float = 0.5  # a write the store refuses is retried, waiting this, doubling
    retry_backoff_max_s: float = 30.0  # the longest wait between those retries
    s3_endpoint: str = ""  # an S3-compatible endpoint (http://host:port); empty: AWS
    s3_region: str = ""  # empty: the AWS SDK finds it (environment, profile, instance metadata)
    s3_access_key_id: str = ""  # empty: AWS_ACCESS_KEY_ID and the rest of the AWS chain
    s3_secret_access_key: Secret = Secret()  # with s3_access_key_id: both or neither


@dataclass(frozen=True)
class TransformSpec:
    """A user function over a batch's columns (``stages/transforms.py``), run at ``at``."""

    function: str  # "module:function": a module beside the pipeline file, or on PYTHONPATH
    # when it runs: after the feature rules, after scaling (model-ready values), or after the
    # model (its outputs among the columns)
    at: TransformPoint = "after_clean"
    name: str = ""  # in dead-letter reasons; the function's name when empty


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
    # [[transforms]]: user functions over the batch's columns, in file order at each point
    transforms: tuple[TransformSpec, ...] = ()
    # [[outputs]]: model outputs -> result fields; empty: the kind's own (tabular: score and label)
    outputs: tuple[OutputSpec, ...] = ()
    result: ResultSettings = field(default_factory=ResultSettings)
    monitoring: MonitoringSettings = field(default_factory=MonitoringSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    collector: CollectorSettings = field(default_factory=CollectorSettings)
    slo: SloSettings = field(default_factory=SloSettings)
    schema_registry: SchemaRegistrySettings = field(default_factory=SchemaRegistrySettings)

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def model_width(self) -> int:
        """Model input columns the features take (a one-hot category takes one per value)."""
        return sum(f.width for f in self.features)

    @property
    def internal_partitions(self) -> int:
        return self.topics.internal_partitions or self.topics.partitions

    def group_id(self, stage: str) -> str:
        return f"{self.kafka.group_prefix}-{self.name}-{stage}"


# The pipeline file's sections, by name.
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
    "result": ResultSettings,
    "monitoring": MonitoringSettings,
    "store": StoreSettings,
    "schema_registry": SchemaRegistrySettings,
}
# Paths, resolved against the pipeline file's folder when relative.
PATH_KEYS = {
    ("input", "schema"),
    ("output", "schema"),
    ("model", "path"),
    ("model", "stats"),
    ("model", "tokenizer"),
    ("kafka", "ssl_cafile"),
    ("kafka", "ssl_certfile"),
    ("kafka", "ssl_keyfile"),
    ("schema_registry", "ssl_cafile"),
    ("schema_registry", "ssl_certfile"),
    ("schema_registry", "ssl_keyfile"),
    ("collector", "tls_certfile"),
    ("collector", "tls_keyfile"),
    ("collector", "tls_client_cafile"),
    ("runtime", "trt_cache_dir"),
}


def with_overrides(settings: Settings, **sections: Mapping[str, Any]) -> Settings:
    """A copy with some section fields replaced (for tests and the embedded broker address)."""
    changes = {
        name: replace(getattr(settings, name), **values) for name, values in sections.items()
    }
    return replace(settings, **changes)
