"""The clean agent: raw messages (one record each) -> validated columnar batches.

Whatever arrives on the raw topic, bad records are dead-lettered and the stage goes on. A
message too large for our producer (it got onto the raw topic through a broker that allows
more than ``kafka.max_message_bytes``) is dead-lettered with the first
``TRUNCATED_DEAD_LETTER_BYTES`` of its key and value and an ``sf-truncated`` header giving
the original sizes: sent whole, the broker would refuse it and stop the stage on every restart.
A rejected record's ``sf-replayed`` header (``streamflow dlq replay`` sets it) goes on to its
dead letter, so replays of a record that keeps failing are counted and capped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from streamflow.agents.common import H_REPLAYED, H_TRUNCATED, StageContext, dead_letter
from streamflow.agents.transport import Chunk
from streamflow.clients import OutMessage
from streamflow.codecs import ReadingDecoder, TextDecoder
from streamflow.records import BytesColumn, RecordBatch, Rejected
from streamflow.stages.clean import CleanRules, clean
from streamflow.stages.text import clean_texts

TRUNCATED_DEAD_LETTER_BYTES = 65_536
WEIGHT_BYTES = 2048  # a raw record weighs 1, plus 1 for every 2 KiB of key and value


class CleanHandler:
    stage = "clean"

    def __init__(self, ctx: StageContext) -> None:
        s = ctx.settings
        self.ctx = ctx
        self.source_topic = s.topics.raw
        self.max_weight = s.batching.clean_max_batch
        self.within = 0.0  # what is fetched is the batch: waiting here only adds latency
        fmt = dict(format=s.input.format, key_field=s.input.key_field, timestamp_field=s.input.timestamp_field,
                   schema_registry_url=s.input.schema_registry_url)
        # A text pipeline reads its text field; a tabular one its features.
        self.text_decoder = TextDecoder(s.input.schema, s.input.text_field, limits=s.limits, **fmt) \
            if s.is_text else None
        self.decoder = self.text_decoder.records if self.text_decoder else \
            ReadingDecoder(s.input.schema, s.feature_names, limits=s.limits, **fmt)
        self.text_field, self.max_string_length = s.input.text_field, s.limits.max_string_length
        self.rules = CleanRules.from_features(s.features)
        self.dead_letter_max_bytes = s.kafka.max_message_bytes  # key + value; headers fit the producer's margin

    @staticmethod
    def weight(record: Any) -> int:
        """Large records weigh more: a batch, and the fetch buffer (two batches), hold at most
        about clean_max_batch x 2 KiB of raw bytes. Counted in records, a flood of 1 MB records
        (under the limit) had the clean stage buffer 2 x 2000 of them (777 MB for 1,200)."""
        return 1 + (len(record.value or b"") + len(record.key or b"")) // WEIGHT_BYTES

    def process(self, topic: str, partition: int, messages: Sequence[Any]) -> tuple[RecordBatch, list[Rejected]]:
        """Decode and clean one partition's messages: (good rows as a batch, rejected rows)."""
        values = [m.value for m in messages]
        keys = [m.key for m in messages]
        texts: BytesColumn | None = None
        if self.text_decoder is not None:
            tdec = self.text_decoder.decode_batch(values, keys)
            errors, device_ids, event_ms = tdec.errors, tdec.device_ids, tdec.event_ms
            ok, reasons = clean_texts(tdec.texts, self.text_field, self.max_string_length)
            ok &= np.fromiter((e is None for e in errors), dtype=bool, count=len(values))
            features = np.zeros((len(values), 0), dtype=np.float32)
            texts = BytesColumn.from_list([t.encode() if good and isinstance(t, str) else b""
                                           for t, good in zip(tdec.texts, ok.tolist(), strict=True)])
        else:
            dec = self.decoder.decode_batch(values, keys)
            errors, device_ids, event_ms = dec.errors, dec.device_ids, dec.event_ms
            res = clean(dec.values, dec.missing, self.rules)
            ok = res.ok & np.fromiter((e is None for e in errors), dtype=bool, count=len(values))
            reasons, features = res.reasons, res.values
        batch = RecordBatch(
            source_topic=topic,
            source_partition=partition,
            offsets=np.fromiter((m.offset for m in messages), dtype=np.int64, count=len(values)),
            ingest_ms=np.fromiter((m.timestamp for m in messages), dtype=np.int64, count=len(values)),
            keys=BytesColumn.from_list(keys),
            values=BytesColumn.from_list(values),
            device_ids=BytesColumn.from_list([d.encode() for d in device_ids]),
            event_ms=np.asarray(event_ms, dtype=np.int64),
            features=features,
            stage="clean",
            texts=texts,
        )
        rejected = []
        for row in np.flatnonzero(~ok).tolist():
            m = messages[row]
            undecodable = errors[row] is not None
            key, value = m.key, m.value
            headers: tuple[tuple[str, bytes], ...] = ()
            size = len(key or b"") + len(value or b"")
            if size > self.dead_letter_max_bytes:
                cut = TRUNCATED_DEAD_LETTER_BYTES
                headers = ((H_TRUNCATED, b"key %d bytes, value %d bytes" % (len(key or b""), len(value or b""))),)
                key, value = key[:cut] if key is not None else None, value[:cut] if value is not None else None
            # A record `streamflow dlq replay` sent back keeps its replay count in its next dead letter.
            headers += tuple((k, v) for k, v in getattr(m, "headers", None) or () if k == H_REPLAYED)
            rejected.append(Rejected(
                stage=self.stage,
                error_class="DecodeError" if undecodable else "ValidationError",
                reason=errors[row] if undecodable else reasons[row],  # type: ignore[arg-type]
                source_topic=topic, source_partition=partition, source_offset=m.offset,
                key=key, value=value, ingest_ms=int(m.timestamp), headers=headers,
            ))
        return (batch if ok.all() else batch.select(ok)), rejected

    async def handle(self, chunks: Sequence[Chunk]) -> asyncio.Future[None]:
        started = time.perf_counter()
        out: list[OutMessage] = []
        rejected: list[Rejected] = []
        n_ok = n = 0
        s = self.ctx.settings
        for c in chunks:
            batch, bad = self.process(c.topic, c.partition, c.records)
            rejected += bad
            n += len(c.records)
            if len(batch):
                n_ok += len(batch)
                out += self.ctx.batch_messages(s.cleaned_topic, batch)
        out += [dead_letter(r, s.topics.dlq) for r in rejected]
        self.ctx.account(n_ok, rejected, started, n)
        return self.ctx.send(out)
