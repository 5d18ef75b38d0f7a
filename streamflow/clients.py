"""Kafka client configuration (every client streamflow creates) and the stages' batch producer.

``kafka_config`` is the base of every confluent-kafka client (producers, consumers, admin
clients): bootstrap, TLS and SASL from ``[kafka]``, and a librdkafka logger that masks secrets.
``faust_credentials`` maps the same settings onto faust's ``broker_credentials`` (aiokafka).

Stages consume with faust (group membership, commits) but produce with librdkafka: one
``produce()`` call per message in C, batched on the wire (linger), and ONE asyncio future
per batch that resolves when the broker has acknowledged every message of it. A stage
acks its input only after that future resolves: at-least-once.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka.abc import AbstractTokenProvider
from confluent_kafka import KafkaError, Producer

from streamflow.errors import BrokerUnavailable
from streamflow.settings import KafkaSettings, Settings

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True)
class OutMessage:
    topic: str
    value: bytes
    key: bytes | None = None
    headers: Headers | None = None
    partition: int = -1  # -1: the default partitioner (by key)


Failure = tuple[OutMessage, KafkaError]  # a message the broker did not acknowledge, and why


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
    """``text`` with every secret of ``k`` replaced by ``MASK`` (for messages built from client errors)."""
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
    """librdkafka properties for ``kafka.security_protocol``, TLS and SASL (nothing for PLAINTEXT)."""
    proto = k.security_protocol
    conf: dict[str, Any] = {}
    if proto == "PLAINTEXT":
        return conf
    conf["security.protocol"] = proto.lower()
    if proto.endswith("SSL"):
        for key, prop in (("ssl_cafile", "ssl.ca.location"), ("ssl_certfile", "ssl.certificate.location"),
                          ("ssl_keyfile", "ssl.key.location")):
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


def kafka_config(settings: Settings | None, bootstrap: str, *, logger: str = "streamflow.librdkafka",
                 log_level: int = 3, **extra: Any) -> dict[str, Any]:
    """The base configuration of every confluent-kafka client: bootstrap, TLS/SASL from
    ``settings.kafka`` (plaintext without settings), a secret-masking logger; then ``extra``."""
    k = settings.kafka if settings is not None else KafkaSettings()
    conf: dict[str, Any] = {"bootstrap.servers": bootstrap, "log_level": log_level,
                            "logger": redacting_logger(logger, secrets_of(k))}
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

    def __init__(self, token_url: str, client_id: str, client_secret: str, scope: str = "", *,
                 timeout_s: float = 10.0) -> None:
        self.token_url, self.client_id, self.scope, self.timeout_s = token_url, client_id, scope, timeout_s
        self._basic = base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
        self._token = ""
        self._expires = 0.0
        self._lock: asyncio.Lock | None = None

    def __repr__(self) -> str:
        return f"<OAuthTokenProvider {self.token_url} client {self.client_id}>"

    def fetch(self) -> tuple[str, float]:
        """One token request: (access token, lifetime in seconds). Blocking."""
        form = {"grant_type": "client_credentials", **({"scope": self.scope} if self.scope else {})}
        req = urllib.request.Request(self.token_url, data=urllib.parse.urlencode(form).encode(), method="POST",
                                     headers={"Authorization": f"Basic {self._basic}", "Accept": "application/json",
                                              "Content-Type": "application/x-www-form-urlencoded"})
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
            raise BrokerUnavailable(f"OAUTHBEARER: the token endpoint {self.token_url} answered "
                                    f"HTTP {exc.code}{why}", retriable=exc.code >= 500) from None
        except (OSError, ValueError) as exc:
            raise BrokerUnavailable(f"OAUTHBEARER: no token from {self.token_url}: "
                                    f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}") from None
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise BrokerUnavailable(f"OAUTHBEARER: the token endpoint {self.token_url} answered without "
                                    "an access_token", retriable=False)
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
        provider = OAuthTokenProvider(k.sasl_oauth_token_url, k.sasl_oauth_client_id,
                                      k.sasl_oauth_client_secret.reveal(), k.sasl_oauth_scope)
        return faust.OAuthCredentials(oauth_cb=provider, ssl_context=ctx)
    return faust.SASLCredentials(username=k.sasl_username, password=k.sasl_password.reveal(), ssl_context=ctx,
                                 mechanism=k.sasl_mechanism)


def producer_config(settings: Settings, bootstrap: str, **extra: Any) -> dict[str, Any]:
    k = settings.kafka
    conf = kafka_config(settings, bootstrap, logger="streamflow.librdkafka.producer")
    conf.update({
        "linger.ms": k.linger_ms,
        "enable.idempotence": True,
        "acks": "all",
        "batch.num.messages": 10000,
        "queue.buffering.max.messages": 200_000,
        "queue.buffering.max.kbytes": 262_144,
        "message.max.bytes": max(k.max_message_bytes, 1_000_000) + 65_536,
        "socket.connection.setup.timeout.ms": int(k.connect_timeout_s * 1000),
        "message.timeout.ms": int(k.delivery_timeout_s * 1000),
        "partitioner": "murmur2_random",  # the Java client's partitioner: same key -> same partition as other clients
    })
    conf.update(extra)
    return conf


# The broker no longer takes this producer instance's messages: only a new instance helps.
_UNUSABLE = frozenset({KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH, KafkaError._FENCED,
                       KafkaError.UNKNOWN_PRODUCER_ID, KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER,
                       KafkaError.INVALID_PRODUCER_ID_MAPPING})


class BatchProducer:
    """Produces batches of messages; ``send()`` returns a future for the whole batch's delivery."""

    def __init__(self, conf: dict[str, Any], *, on_delivered: Any = None) -> None:
        self._conf = conf
        self._producer = Producer(conf)
        self._generation = 0  # producer instances replaced so far (see renew)
        self._retired: tuple[Producer, ...] = ()  # replaced, still reporting their last deliveries
        self._on_delivered = on_delivered  # callable(topic, n_ok, n_failed), called on the loop
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll_loop, name="streamflow-producer-poll", daemon=True)
        self._thread.start()

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)
            for old in self._retired:
                old.poll(0)

    def _renew(self, generation: int, err: KafkaError) -> None:
        """Replace a producer the broker has fenced (or that hit a fatal error) by a fresh instance.

        An idempotent producer whose messages timed out bumps its epoch; a broker that does not
        follow (the embedded one) fences it from then on, and every later message fails. The
        old instance keeps reporting (failing) its queued messages, which are sent again on the
        new one. Once per generation: many batches see the same fencing."""
        if generation != self._generation:
            return
        log.warning("producer unusable (%s): starting a new producer instance", err.str())
        self._retired = (*(p for p in self._retired if len(p)), self._producer)  # drop the finished ones
        self._producer = Producer(self._conf)
        self._generation += 1

    def send(self, messages: Sequence[OutMessage], loop: asyncio.AbstractEventLoop) -> asyncio.Future[list[Failure]]:
        """Queue every message; the future resolves once the broker has answered for all of them,
        with the ones it did not acknowledge (empty: all delivered). See agents/delivery.py."""
        fut: asyncio.Future[list[Failure]] = loop.create_future()
        if not messages:
            fut.set_result([])
            return fut
        # Delivery reports run on the poll thread only (never flush() or poll() on the caller's
        # thread while messages are out), so this countdown needs no lock.
        pending = [len(messages)]
        failures: list[Failure] = []
        per_topic: dict[str, int] = {}
        for m in messages:
            per_topic[m.topic] = per_topic.get(m.topic, 0) + 1

        generation = self._generation

        def settle() -> None:
            for _, err in failures:
                if err.fatal() or err.code() in _UNUSABLE:
                    self._renew(generation, err)
                    break
            if self._on_delivered is not None:
                failed: dict[str, int] = {}
                for m, _ in failures:
                    failed[m.topic] = failed.get(m.topic, 0) + 1
                for topic, n in per_topic.items():
                    self._on_delivered(topic, n - failed.get(topic, 0), failed.get(topic, 0))
            if not fut.done():
                fut.set_result(failures)

        def on_delivery(m: OutMessage) -> Any:
            def report(err: KafkaError | None, msg: Any) -> None:
                if err is not None:
                    failures.append((m, err))
                pending[0] -= 1
                if not pending[0]:
                    loop.call_soon_threadsafe(settle)
            return report

        produce = self._producer.produce
        for m in messages:
            while True:
                try:
                    if m.partition >= 0:
                        produce(m.topic, m.value, m.key, partition=m.partition, headers=m.headers,  # type: ignore[arg-type]
                                on_delivery=on_delivery(m))
                    else:
                        produce(m.topic, m.value, m.key, headers=m.headers, on_delivery=on_delivery(m))  # type: ignore[arg-type]
                    break
                except BufferError:
                    # Local queue full: the broker is slower than we produce. Waiting here (the
                    # poll thread drains the queue) is the backpressure that keeps memory bounded.
                    time.sleep(0.005)
        return fut

    def close(self, timeout_s: float = 30.0) -> int:
        """Wait for outstanding deliveries (up to ``timeout_s``); return how many are still queued.

        The poll thread stops first, so delivery reports keep running on one thread only."""
        self._stop.set()
        self._thread.join(timeout=2)
        for old in self._retired:
            old.flush(0)
        left = int(self._producer.flush(timeout_s))
        if left:
            log.error("%d message(s) still undelivered at shutdown", left)
        return left
