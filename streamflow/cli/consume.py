"""``streamflow consume``: a topic's records, decoded, one JSON object per line."""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, TopicPartition

from streamflow.cli import connect, settings_args
from streamflow.codecs import RecordCodec, schema_registry, to_json_line
from streamflow.dedupe import Deduplicator
from streamflow.errors import ConfigError, DecodeError
from streamflow.headers import (
    H_REASON,
    H_REASON_CODE,
    H_SOURCE_OFFSET,
    H_SOURCE_PARTITION,
    H_SOURCE_TOPIC,
    H_STAGE,
)
from streamflow.kafka.config import consumer_config
from streamflow.settings import Settings


def codec_for(settings: Settings, topic: str) -> RecordCodec | None:
    """The codec of a pipeline topic: results for scored, readings for raw; None for the DLQ
    (raw bytes)."""
    t = settings.topics
    if topic == t.scored:
        if not settings.output.schema:  # the schema the pipeline's declaration generates
            from streamflow.inference.record import generated_schema

            return RecordCodec(
                generated_schema(settings),
                format=settings.output.format,
                registry=schema_registry(settings),
                topic=topic,
            )
        return RecordCodec(
            settings.output.schema,
            format=settings.output.format,
            registry=schema_registry(settings),
            topic=topic,
        )
    if topic == t.raw:
        return RecordCodec(
            settings.input.schema,
            format="avro",
            registry=schema_registry(settings),
            topic=topic,
        )
    return None


def render(msg: Any, codec: RecordCodec | None, dlq: bool, show_headers: bool) -> str:
    headers = {k: v.decode("utf-8", "replace") for k, v in (msg.headers() or [])}
    value = msg.value() or b""
    out: dict[str, Any]
    if dlq:
        out = {
            "reason": headers.get(H_REASON),
            "reason_code": headers.get(H_REASON_CODE),
            "stage": headers.get(H_STAGE),
            "source": (
                f"{headers.get(H_SOURCE_TOPIC)}/{headers.get(H_SOURCE_PARTITION)}"
                f"@{headers.get(H_SOURCE_OFFSET)}"
            ),
            "value": value.decode("utf-8", "backslashreplace"),
        }
    elif codec is not None:
        try:
            out = codec.decode(value)
        except DecodeError as exc:
            out = {"undecodable": exc.reason, "value": value.decode("utf-8", "backslashreplace")}
    else:
        out = {"value": value.decode("utf-8", "backslashreplace")}
    if show_headers:
        out = {**out, "_headers": headers, "_partition": msg.partition(), "_offset": msg.offset()}
    return to_json_line(out)


def consume(
    settings: Settings,
    bootstrap: str,
    topic: str,
    *,
    limit: int,
    timeout_s: float,
    from_beginning: bool,
    show_headers: bool,
    dedupe: bool = False,
) -> int:
    consumer = Consumer(
        consumer_config(settings, bootstrap, logger="streamflow.librdkafka.consume")
        | {
            "group.id": f"streamflow-consume-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 50,
        }
    )
    md = consumer.list_topics(topic, timeout=settings.kafka.connect_timeout_s).topics.get(topic)
    if md is None or md.error is not None or not md.partitions:
        consumer.close()
        raise ConfigError(f"topic {topic!r} does not exist at {bootstrap}", source="command line")
    start = OFFSET_BEGINNING if from_beginning else OFFSET_END
    consumer.assign([TopicPartition(topic, p, start) for p in md.partitions])
    codec = codec_for(settings, topic)
    dlq = topic == settings.topics.dlq
    n, last = 0, time.monotonic()
    seen = Deduplicator() if dedupe else None
    try:
        while not limit or n < limit:
            msg = consumer.poll(0.2)
            if msg is None:
                if timeout_s and time.monotonic() - last > timeout_s:
                    break
                continue
            if msg.error():
                print(json.dumps({"error": str(msg.error())}), file=sys.stderr)
                continue
            last = time.monotonic()
            if seen is not None and not seen.first_time(msg.headers()):
                continue  # a repeat of a source record already printed (at-least-once delivery)
            print(render(msg, codec, dlq, show_headers), flush=True)
            n += 1
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
        if seen is not None and seen.repeats:
            print(
                f"streamflow consume: {seen.repeats} repeated result(s) left out (--dedupe)",
                file=sys.stderr,
            )
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Declare ``streamflow consume TOPIC``."""
    co = sub.add_parser(
        "consume", help="print decoded records of a topic, one JSON object per line"
    )
    co.add_argument("topic")
    co.add_argument(
        "--limit", type=int, default=0, help="stop after N records (0: until Ctrl-C or --timeout)"
    )
    co.add_argument(
        "--timeout",
        type=float,
        default=0.0,
        help="stop after N seconds without a record (0: never)",
    )
    co.add_argument(
        "--latest", action="store_true", help="only new records (default: from the beginning)"
    )
    co.add_argument("--headers", action="store_true", help="include the message headers")
    co.add_argument(
        "--dedupe",
        action="store_true",
        help="leave out repeated results of one source record (by the sf-source-* headers)",
    )
    settings_args(co)
    co.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the topic's records (see ``consume``)."""
    s, bootstrap = connect(args, "streamflow consume")
    return consume(
        s,
        bootstrap,
        args.topic,
        limit=args.limit,
        timeout_s=args.timeout,
        from_beginning=not args.latest,
        show_headers=args.headers,
        dedupe=args.dedupe,
    )
