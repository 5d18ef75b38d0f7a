"""Topic admin: is a broker there, and the pipeline's topics created.

Every admin client takes the pipeline's TLS/SASL settings (``kafka/config.py``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from streamflow.errors import BrokerUnavailable, ConfigError
from streamflow.kafka.config import kafka_config, mask

if TYPE_CHECKING:
    from streamflow.settings import Settings

log = logging.getLogger(__name__)


def admin_client(bootstrap: str, settings: Settings | None = None, **extra: Any) -> AdminClient:
    """An admin client with the pipeline's TLS/SASL settings (plaintext without settings)."""
    admin = dict(settings.kafka.admin) if settings is not None else {}  # [kafka.admin]
    return AdminClient(
        kafka_config(
            settings,
            bootstrap,
            logger="streamflow.librdkafka.admin",
            **({"log_level": 0} | admin | extra),
        )
    )


def wait_ready(
    bootstrap: str, timeout_s: float = 10.0, *, settings: Settings | None = None
) -> None:
    """Return once a broker answers a metadata request at ``bootstrap``, else raise
    BrokerUnavailable saying why the client could not connect (refused, TLS handshake,
    authentication)."""
    deadline = time.monotonic() + timeout_s
    reasons: list[
        str
    ] = []  # what librdkafka reported, e.g. "SSL handshake failed: ... certificate verify failed"

    def on_error(err: Any) -> None:
        reasons.append(mask(err.str(), settings.kafka) if settings is not None else err.str())

    admin = admin_client(
        bootstrap, settings, error_cb=on_error, **{"socket.connection.setup.timeout.ms": 2000}
    )
    last: Exception | None = None
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            md = admin.list_topics(timeout=min(2.0, max(0.2, remaining)))
            if md.brokers:
                return
        except KafkaException as exc:
            last = exc
        admin.poll(0)  # serves error_cb
        time.sleep(0.05)
    admin.poll(0)
    specific = [r for r in reasons if "brokers are down" not in r]
    if specific:
        why = f": {specific[-1]}"
    else:
        why = f": {last.args[0].str()}" if last is not None and last.args else ""
    protocol = settings.kafka.security_protocol if settings is not None else "PLAINTEXT"
    raise BrokerUnavailable(
        f"no Kafka broker answered at {bootstrap} within {timeout_s:g}s ({protocol}){why}. "
        "Check kafka.bootstrap (STREAMFLOW_KAFKA_BOOTSTRAP) and the [kafka] security settings, "
        "or leave kafka.bootstrap empty to use the embedded broker."
    )


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication: int = 1
    configs: tuple[tuple[str, str], ...] = ()  # topic configs it is created with
    setting: str = ""  # where its configs come from, for messages ("topics.dlq_configs")


def ensure_topics(
    bootstrap: str,
    topics: Iterable[TopicSpec],
    *,
    timeout_s: float = 15.0,
    settings: Settings | None = None,
) -> list[str]:
    """Create the topics that do not exist yet (idempotent); return the names created.

    An existing topic with fewer partitions than asked for is logged, not changed:
    repartitioning a live topic moves keys between partitions, an operator's decision.
    ``settings`` gives the [kafka] TLS/SASL settings (plaintext without).
    """
    wait_ready(bootstrap, timeout_s, settings=settings)
    admin = admin_client(bootstrap, settings)
    wanted = {t.name: t for t in topics}
    existing = admin.list_topics(timeout=timeout_s).topics
    if settings is not None and not settings.topics.create:
        missing = sorted(n for n in wanted if n not in existing)
        if missing:
            raise ConfigError(
                f"topics.create = false and {len(missing)} topic(s) the pipeline uses do not "
                f"exist at {bootstrap}: {', '.join(missing)} (create them, with "
                "their partitions, or let streamflow create them)"
            )
        return []
    for name, spec in wanted.items():
        if name in existing and len(existing[name].partitions) < spec.partitions:
            log.warning(
                "topic %s has %d partitions, the pipeline asks for %d: left as is",
                name,
                len(existing[name].partitions),
                spec.partitions,
            )
    new = [
        NewTopic(
            t.name,
            num_partitions=t.partitions,
            replication_factor=t.replication,
            config=dict(t.configs),
        )
        for n, t in wanted.items()
        if n not in existing
    ]
    created: list[str] = []
    if new:
        for name, fut in admin.create_topics(new, operation_timeout=timeout_s).items():
            try:
                fut.result(timeout=timeout_s)
                created.append(name)
            except KafkaException as exc:
                err = exc.args[0]
                if err.name() == "TOPIC_ALREADY_EXISTS":
                    continue
                spec = wanted[name]
                if spec.configs and err.name() in ("INVALID_CONFIG", "POLICY_VIOLATION"):
                    raise ConfigError(
                        f"{spec.setting or 'topics'}: the broker refused to create {name} with "
                        f"{dict(spec.configs)}: {err.str()}"
                    ) from None
                raise
    # Wait until the metadata shows every partition with a leader, so clients start cleanly.
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        md = admin.list_topics(timeout=timeout_s).topics
        if all(n in md and md[n].error is None and len(md[n].partitions) >= 1 for n in wanted):
            break
        time.sleep(0.05)
    return created
