"""Kafka client configuration: every client streamflow creates, and faust's credentials.

``kafka_config`` is the base of every confluent-kafka client (producers, consumers, admin
clients): bootstrap, TLS and SASL from ``[kafka]``, and a librdkafka logger that masks secrets.
``faust_credentials`` maps the same settings onto faust's ``broker_credentials`` (aiokafka).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from typing import Any

from aiokafka.abc import AbstractTokenProvider

from streamflow.errors import BrokerUnavailable
from streamflow.settings import KafkaSettings, Settings

log = logging.getLogger(__name__)

MASK = "********"


class _RedactSecrets(logging.Filter):
    """Replaces every known secret value in a log record's message with ``MASK``."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            msg = record.getMessage()
            if any(sec in msg for sec in self.secrets):
                for sec in self.secrets:
                    msg = msg.replace(sec, MASK)
                record.msg, record.args = msg, None
        return True


_REDACT = _RedactSecrets()


def secrets_of(k: KafkaSettings) -> list[str]:
    return [sec.reveal() for sec in (k.sasl_password, k.sasl_oauth_client_secret) if sec]


def mask(text: str, k: KafkaSettings) -> str:
    """``text`` with every secret of ``k`` replaced by ``MASK`` (for messages built from client
    errors)."""
    for sec in secrets_of(k):
        text = text.replace(sec, MASK)
    return text


def redacting_logger(name: str, secrets: Iterable[str] = ()) -> logging.Logger:
    """A logger for a client library's own messages (librdkafka's ``logger``) that never
    prints ``secrets``, whatever the library chooses to say."""
    _REDACT.secrets.update(sec for sec in secrets if sec)
    logger = logging.getLogger(name)
    if _REDACT not in logger.filters:
        logger.addFilter(_REDACT)
    return logger


def security_config(k: KafkaSettings) -> dict[str, Any]:
    """librdkafka properties for ``kafka.security_protocol``, TLS and SASL (nothing for
    PLAINTEXT)."""
    proto = k.security_protocol
    conf: dict[str, Any] = {}
    if proto == "PLAINTEXT":
        return conf
    conf["security.protocol"] = proto.lower()
    if proto.endswith("SSL"):
        for key, prop in (
            ("ssl_cafile", "ssl.ca.location"),
            ("ssl_certfile", "ssl.certificate.location"),
            ("ssl_keyfile", "ssl.key.location"),
        ):
            if getattr(k, key):
                conf[prop] = getattr(k, key)
        conf["ssl.endpoint.identification.algorithm"] = "https" if k.ssl_check_hostname else "none"
    if proto.startswith("SASL_"):
        conf["sasl.mechanism"] = k.sasl_mechanism
        if k.sasl_mechanism == "OAUTHBEARER":
            # librdkafka's built-in OIDC client-credentials flow: the same token endpoint, client
            # and scope that OAuthTokenProvider uses for the faust (aiokafka) side.
            conf["sasl.oauthbearer.method"] = "oidc"
            conf["sasl.oauthbearer.token.endpoint.url"] = k.sasl_oauth_token_url
            conf["sasl.oauthbearer.client.id"] = k.sasl_oauth_client_id
            conf["sasl.oauthbearer.client.secret"] = k.sasl_oauth_client_secret.reveal()
            if k.sasl_oauth_scope:
                conf["sasl.oauthbearer.scope"] = k.sasl_oauth_scope
        else:
            conf["sasl.username"] = k.sasl_username
            conf["sasl.password"] = k.sasl_password.reveal()
    return conf


def kafka_config(
    settings: Settings | None,
    bootstrap: str,
    *,
    logger: str = "streamflow.librdkafka",
    log_level: int = 3,
    **extra: Any,
) -> dict[str, Any]:
    """The base configuration of every confluent-kafka client: bootstrap, TLS/SASL from
    ``settings.kafka`` (plaintext without settings), a secret-masking logger; then ``extra``."""
    k = settings.kafka if settings is not None else KafkaSettings()
    conf: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "log_level": log_level,
        "logger": redacting_logger(logger, secrets_of(k)),
    }
    conf.update(security_config(k))
    conf.update(extra)
    return conf


def ssl_context(k: KafkaSettings) -> ssl.SSLContext:
    """The TLS context for Python clients (aiokafka under faust), from the same settings."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=k.ssl_cafile or None)
    if k.ssl_certfile:
        ctx.load_cert_chain(k.ssl_certfile, k.ssl_keyfile or None)
    ctx.check_hostname = k.ssl_check_hostname
    return ctx


class OAuthTokenProvider(AbstractTokenProvider):
    """OAUTHBEARER tokens for aiokafka, from an OAuth 2 client-credentials token endpoint: what
    librdkafka's ``sasl.oauthbearer.method=oidc`` does (HTTP Basic client id/secret, form
    ``grant_type=client_credentials`` and ``scope``). Tokens are reused until a minute (or a
    fifth of their lifetime) before they expire."""

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: str,
        scope: str = "",
        *,
        timeout_s: float = 10.0,
    ) -> None:
        self.token_url, self.client_id, self.scope, self.timeout_s = (
            token_url,
            client_id,
            scope,
            timeout_s,
        )
        self._basic = base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
        self._token = ""
        self._expires = 0.0
        self._lock: asyncio.Lock | None = None

    def __repr__(self) -> str:
        return f"<OAuthTokenProvider {self.token_url} client {self.client_id}>"

    def fetch(self) -> tuple[str, float]:
        """One token request: (access token, lifetime in seconds). Blocking."""
        form = {"grant_type": "client_credentials", **({"scope": self.scope} if self.scope else {})}
        req = urllib.request.Request(
            self.token_url,
            data=urllib.parse.urlencode(form).encode(),
            method="POST",
            headers={
                "Authorization": f"Basic {self._basic}",
                "Accept": "application/json",
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            why = ""
            try:
                err = json.loads(exc.read())
                why = f": {err.get('error', '')} {err.get('error_description', '')}".rstrip()
            except (ValueError, AttributeError):
                pass
            raise BrokerUnavailable(
                f"OAUTHBEARER: the token endpoint {self.token_url} answered HTTP {exc.code}{why}",
                retriable=exc.code >= 500,
            ) from None
        except (OSError, ValueError) as exc:
            raise BrokerUnavailable(
                f"OAUTHBEARER: no token from {self.token_url}: "
                f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
            ) from None
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise BrokerUnavailable(
                f"OAUTHBEARER: the token endpoint {self.token_url} answered without "
                "an access_token",
                retriable=False,
            )
        return token, float(body.get("expires_in") or 3600)

    async def token(self) -> str:
        """aiokafka's AbstractTokenProvider interface."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if not self._token or time.time() >= self._expires:
                token, lifetime = await asyncio.get_running_loop().run_in_executor(None, self.fetch)
                self._token = token
                self._expires = time.time() + max(lifetime - max(60.0, lifetime / 5), lifetime / 2)
            return self._token

    def extensions(self) -> dict[str, str]:
        return {}


def faust_credentials(settings: Settings) -> Any:
    """faust's ``broker_credentials`` for ``settings.kafka`` (None for PLAINTEXT). faust hands
    them to aiokafka: SSL -> SSLCredentials; SASL PLAIN/SCRAM -> SASLCredentials; OAUTHBEARER
    -> OAuthCredentials with an OAuthTokenProvider; an SSL context makes the SASL ones SASL_SSL."""
    import faust

    k = settings.kafka
    if k.security_protocol == "PLAINTEXT":
        return None
    ctx = ssl_context(k) if k.security_protocol.endswith("SSL") else None
    if k.security_protocol == "SSL":
        return faust.SSLCredentials(ctx)
    if k.sasl_mechanism == "OAUTHBEARER":
        provider = OAuthTokenProvider(
            k.sasl_oauth_token_url,
            k.sasl_oauth_client_id,
            k.sasl_oauth_client_secret.reveal(),
            k.sasl_oauth_scope,
        )
        return faust.OAuthCredentials(oauth_cb=provider, ssl_context=ctx)
    return faust.SASLCredentials(
        username=k.sasl_username,
        password=k.sasl_password.reveal(),
        ssl_context=ctx,
        mechanism=k.sasl_mechanism,
    )


# Properties streamflow's guarantees rest on: refused in [kafka.producer|consumer|admin], why.
_SECURITY = "set it in [kafka] (security_protocol, ssl_*, sasl_*): every client takes those"
REFUSED: dict[str, dict[str, str]] = {
    "producer": {
        "acks": "results and dead letters are acknowledged by every in-sync replica (acks=all): "
        "at-least-once rests on it",
        "enable.idempotence": "retries must not duplicate or reorder a partition's messages",
        "transactional.id": "streamflow does not produce in transactions (docs/guarantees.md)",
        "partitioner": "a result goes to the partition other clients pick for its key "
        "(murmur2_random, the Java client's)",
        "message.max.bytes": "set kafka.max_message_bytes (the limits are checked against it)",
    },
    "consumer": {
        "enable.auto.commit": "offsets are committed only once a batch's output is delivered",
        "enable.auto.offset.store": "offsets are committed only once a batch's output is delivered",
        "group.id": "each step's group is <kafka.group_prefix>-<pipeline>-<step>",
        "fetch.wait.max.ms": "set kafka.fetch_max_wait_ms",
    },
    "admin": {},
}
SHARED = {"bootstrap.servers": "set kafka.bootstrap"}
# librdkafka consumer property -> (the faust app setting of the agents' consumer, convert)
AGENT_CONSUMER: dict[str, tuple[str, Any]] = {
    "auto.offset.reset": (
        "consumer_auto_offset_reset",
        lambda v: {
            "smallest": "earliest",
            "beginning": "earliest",
            "largest": "latest",
            "end": "latest",
        }.get(str(v), str(v)),
    ),  # fmt: skip
    "session.timeout.ms": ("broker_session_timeout", lambda v: int(v) / 1000),
    "heartbeat.interval.ms": ("broker_heartbeat_interval", lambda v: int(v) / 1000),
    "max.poll.interval.ms": ("broker_max_poll_interval", lambda v: int(v) / 1000),
    "max.partition.fetch.bytes": ("consumer_max_fetch_size", int),
    "fetch.max.bytes": ("consumer_max_fetch_size", int),
    "client.id": ("broker_client_id", str),
    "request.timeout.ms": ("broker_request_timeout", lambda v: int(v) / 1000),
}


def passthrough_problems(k: KafkaSettings) -> list[str]:
    """Every [kafka.producer|consumer|admin] property refused, or that the agents' consumer cannot
    honour, naming its key and why."""
    p: list[str] = []
    for table in ("producer", "consumer", "admin"):
        for name in getattr(k, table):
            where = f"kafka.{table}.{name}"
            why = REFUSED[table].get(name) or SHARED.get(name)
            if why is None and name.split(".")[0] in ("security", "sasl", "ssl"):
                why = _SECURITY
            if why is not None:
                p.append(f"{where}: streamflow sets this itself: {why}")
            elif table == "consumer" and name not in AGENT_CONSUMER:
                p.append(
                    f"{where}: the agents' consumer (aiokafka, through faust) has no equivalent "
                    f"of this librdkafka property; it takes {', '.join(sorted(AGENT_CONSUMER))}"
                )
    if "auto.offset.reset" in k.consumer:
        value = AGENT_CONSUMER["auto.offset.reset"][1](k.consumer["auto.offset.reset"])
        if value not in ("earliest", "latest"):
            p.append(f"kafka.consumer.auto.offset.reset: earliest or latest, got {value!r}")
    return p


def agent_consumer(k: KafkaSettings) -> dict[str, Any]:
    """The faust app settings [kafka.consumer] maps onto (checked by ``passthrough_problems``)."""
    out: dict[str, Any] = {}
    for name, value in k.consumer.items():
        setting, convert = AGENT_CONSUMER[name]
        out[setting] = convert(value)
    return out


def consumer_config(settings: Settings, bootstrap: str, **extra: Any) -> dict[str, Any]:
    """A confluent-kafka consumer of the CLI (consume, dlq, monitor): [kafka.consumer] on top."""
    return kafka_config(settings, bootstrap, **extra) | dict(settings.kafka.consumer)


# What an internal topic is created with unless [topics.internal_configs] says otherwise. The
# stages that write one compress with its codec: their messages are columnar chunks of many
# records, the broker stores them as sent, and the next stage's consumer decompresses them.
INTERNAL_TOPIC_CONFIGS: dict[str, str] = {"compression.type": "zstd", "cleanup.policy": "delete"}
CODECS = ("gzip", "snappy", "lz4", "zstd")  # a producer's compression.type besides none
TOPIC_ROLES = ("raw", "scored", "dlq", "internal")  # [topics.<role>_configs]


def fetch_config(
    settings: Settings, bootstrap: str, group_id: str, client_id: str
) -> dict[str, Any]:
    """The librdkafka consumer an agent fetches with under kafka.fetch_client = "librdkafka".
    It is only ``assign()``ed (faust's aiokafka consumer keeps the group, under the same group
    id) and never commits; the [kafka.consumer] properties faust takes apply to it too."""
    k = settings.kafka
    fetch_bytes = max(4 * 1024 * 1024, k.max_message_bytes * 2)
    fetch: dict[str, Any] = {
        "group.id": group_id,
        "client.id": client_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": False,
        "isolation.level": "read_uncommitted",  # as faust's at-least-once consumer reads
        "fetch.wait.max.ms": k.fetch_max_wait_ms,
        "fetch.min.bytes": 1,
        "max.partition.fetch.bytes": fetch_bytes,
        "fetch.max.bytes": max(fetch_bytes, 52_428_800),
        "queued.max.messages.kbytes": 16_384,  # what it prefetches per partition, at most
        "socket.connection.setup.timeout.ms": int(k.connect_timeout_s * 1000),
    }
    conf = kafka_config(settings, bootstrap, logger="streamflow.librdkafka.fetch", **fetch)
    for name in ("max.partition.fetch.bytes", "fetch.max.bytes", "client.id"):
        if name in k.consumer:
            conf[name] = AGENT_CONSUMER[name][1](k.consumer[name])
    return conf


def topic_configs(settings: Settings, role: str) -> dict[str, str]:
    """The configs a topic of ``role`` (raw, scored, dlq, internal) is created with: the
    defaults for its role, then [topics.<role>_configs], as Kafka's strings."""
    base = INTERNAL_TOPIC_CONFIGS if role == "internal" else {}
    user = getattr(settings.topics, f"{role}_configs")
    return {
        k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in (base | user).items()
    }


def internal_compression(settings: Settings) -> dict[str, Any]:
    """The producer compression of a stage that writes an internal topic: that topic's codec
    (zstd unless configured), or none when the topic's compression.type names no codec
    (uncompressed, producer); [kafka.producer] compression.type, when set, wins everywhere."""
    if "compression.type" in settings.kafka.producer:
        return {}
    codec = topic_configs(settings, "internal").get("compression.type", "")
    if codec == "zstd" and "compression.level" not in settings.kafka.producer:
        # zstd's fastest level: a 300-byte internal record compresses 2.03x in 0.67 µs at level
        # 1, 2.26x in 0.98 µs at librdkafka's default 3 (measured on a 2,000-record chunk)
        return {"compression.type": "zstd", "compression.level": 1}
    return {"compression.type": codec if codec in CODECS else "none"}


def producer_config(settings: Settings, bootstrap: str, **extra: Any) -> dict[str, Any]:
    k = settings.kafka
    conf = kafka_config(settings, bootstrap, logger="streamflow.librdkafka.producer")
    conf.update(
        {
            "linger.ms": k.linger_ms,
            "enable.idempotence": True,
            "acks": "all",
            "batch.num.messages": 10000,
            "queue.buffering.max.messages": 200_000,
            "queue.buffering.max.kbytes": 262_144,
            "message.max.bytes": max(k.max_message_bytes, 1_000_000) + 65_536,
            "socket.connection.setup.timeout.ms": int(k.connect_timeout_s * 1000),
            "message.timeout.ms": int(k.delivery_timeout_s * 1000),
            # the Java client's partitioner: same key -> same partition as other clients
            "partitioner": "murmur2_random",
        }
    )
    conf.update(k.producer)  # [kafka.producer]: compression.type, client.rack, ...
    conf.update(extra)
    return conf
