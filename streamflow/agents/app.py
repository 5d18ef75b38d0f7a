"""The faust app and worker of one step: its consumer group, and a drain on the first signal."""

from __future__ import annotations

import asyncio
import logging
import signal
import tempfile
from collections.abc import Awaitable, Callable
from typing import Any

import faust

from streamflow.kafka.config import agent_consumer, faust_credentials, fetch_config
from streamflow.kafka.transport import ChunkedApp
from streamflow.settings import Settings

log = logging.getLogger(__name__)


def make_app(settings: Settings, stage: str, bootstrap: str, *, chunked: bool = True) -> ChunkedApp:
    k = settings.kafka
    # Per-process scratch (no tables are kept), owned by whoever runs the worker: a shared parent
    # made by another user would stop it with PermissionError.
    datadir = tempfile.mkdtemp(prefix=f"streamflow-faust-{settings.group_id(stage)}-")
    conf: dict[str, Any] = {
        # streamflow:// is faust's aiokafka transport with chunked delivery (kafka/transport.py)
        "broker": f"{'streamflow' if chunked else 'kafka'}://{bootstrap}",
        "broker_credentials": faust_credentials(settings),  # [kafka] TLS/SASL, as aiokafka takes
        "broker_session_timeout": k.session_timeout_s,
        "broker_heartbeat_interval": k.heartbeat_interval_s,
        "broker_commit_interval": k.commit_interval_s,
        "broker_request_timeout": max(30.0, k.session_timeout_s * 2),
        "consumer_auto_offset_reset": "earliest",
        "consumer_max_fetch_size": max(4 * 1024 * 1024, k.max_message_bytes * 2),
        "broker_max_poll_records": 5000,
        "stream_buffer_maxsize": 8192,
        "stream_wait_empty": False,
        "topic_allow_declare": False,
        "topic_disable_leader": True,
        "web_enabled": False,
        "datadir": datadir,
        "processing_guarantee": "at_least_once",
    }
    conf.update(agent_consumer(k))  # [kafka.consumer], mapped onto faust's settings
    app = ChunkedApp(settings.group_id(stage), **conf)
    if chunked and k.fetch_client == "librdkafka":
        client_id = str(k.consumer.get("client.id") or f"streamflow-{settings.name}-{stage}")
        app.librdkafka_fetch = fetch_config(
            settings, bootstrap, settings.group_id(stage), client_id
        )
    return app


class DrainingWorker(faust.Worker):
    """faust's worker, draining the stage on the first SIGTERM/SIGINT before shutting down.

    faust's own shutdown cancels the agent and then stops the consumer: batches in flight
    would be produced but never committed, and repeated after a restart. The drain has to
    run while the consumer is still up, so it hooks the signal rather than a shutdown hook
    (``on_before_shutdown`` runs too late: mode gathers and cancels what is left).
    A second signal, or the drain timing out, shuts down at once (at-least-once still holds).
    """

    def __init__(
        self, app: faust.App, drain: Callable[[], Awaitable[None]], timeout_s: float, **kwargs: Any
    ) -> None:
        super().__init__(app, **kwargs)
        self._drain, self._drain_timeout_s = drain, timeout_s
        self._draining = False

    def _on_sigint(self) -> None:
        self._drain_then_stop(signal.SIGINT)

    def _on_sigterm(self) -> None:
        self._drain_then_stop(signal.SIGTERM)

    def _drain_then_stop(self, sig: signal.Signals) -> None:
        if self._draining:  # second signal: stop now
            self._schedule_shutdown(sig)
            return
        self._draining = True

        async def drain_then_stop() -> None:
            try:
                await asyncio.wait_for(self._drain(), self._drain_timeout_s)
            except TimeoutError:
                log.warning(
                    "drain did not finish within runtime.drain_timeout_s=%s; stopping anyway "
                    "(uncommitted batches are read again on restart)",
                    self._drain_timeout_s,
                )
            except Exception as exc:
                log.warning("drain failed, stopping anyway: %r", exc)
            finally:
                self._schedule_shutdown(sig)

        self.add_future(drain_then_stop())
