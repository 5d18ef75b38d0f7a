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

from collections.abc import Sequence
from typing import Any

import numpy as np

from streamflow.agents.context import StageContext
from streamflow.agents.handler import StepHandler, StepOutput
from streamflow.errors import DecodeError, ValidationError
from streamflow.headers import H_REPLAYED, H_TRUNCATED
from streamflow.inference.kinds import kind_for
from streamflow.kafka.transport import Chunk
from streamflow.records import BytesColumn, RecordBatch, Rejected

TRUNCATED_DEAD_LETTER_BYTES = 65_536
WEIGHT_BYTES = 2048  # a raw record weighs 1, plus 1 for every 2 KiB of key and value


class CleanHandler(StepHandler):
    stage = "clean"
    raw_input = True

    def __init__(self, ctx: StageContext) -> None:
        super().__init__(ctx)
        s = ctx.settings
        self.kind = kind_for(s)  # decodes what its model needs: the features, or the text field
        # Built now, so a bad schema or registry fails at start-up; schema ids in headers are read
        # only with a registry (they cost a pass otherwise).
        self.registry = self.kind.decoder.registry is not None
        self.max_weight = s.batching.clean_max_batch
        self.dead_letter_max_bytes = (
            s.kafka.max_message_bytes
        )  # key + value; headers fit the producer's margin

    def weight(self, record: Any) -> int:
        """Large records weigh more: a batch, and the fetch buffer (two batches), hold at most
        about clean_max_batch x 2 KiB of raw bytes. Counted in records, a flood of 1 MB records
        (under the limit) had the clean stage buffer 2 x 2000 of them (777 MB for 1,200)."""
        return raw_weight(record)

    def process(
        self, topic: str, partition: int, messages: Sequence[Any]
    ) -> tuple[RecordBatch, list[Rejected]]:
        """Decode and clean one partition's messages: (good rows as a batch, rejected rows)."""
        values = [m.value for m in messages]
        keys = [m.key for m in messages]
        sent_headers = [getattr(m, "headers", None) for m in messages] if self.registry else None
        c = self.kind.clean(values, keys, sent_headers)
        batch = RecordBatch(
            source_topic=topic,
            source_partition=partition,
            offsets=np.fromiter((m.offset for m in messages), dtype=np.int64, count=len(values)),
            ingest_ms=np.fromiter(
                (m.timestamp for m in messages), dtype=np.int64, count=len(values)
            ),
            keys=BytesColumn.from_list(keys),
            values=BytesColumn.from_list(values),
            device_ids=BytesColumn.from_list([d.encode() for d in c.ids]),
            event_ms=c.event_ms,
            features=c.features,
            stage="clean",
            texts=c.texts,
            columns=c.columns,
        )
        rejected = []
        for row in np.flatnonzero(~c.ok).tolist():
            m = messages[row]
            error, invalid = c.errors[row], c.reasons[row]
            why = error or invalid
            assert why is not None, "a row that is not ok has a reason"
            key, value = m.key, m.value
            headers: tuple[tuple[str, bytes], ...] = ()
            size = len(key or b"") + len(value or b"")
            if size > self.dead_letter_max_bytes:
                cut = TRUNCATED_DEAD_LETTER_BYTES
                headers = (
                    (
                        H_TRUNCATED,
                        b"key %d bytes, value %d bytes" % (len(key or b""), len(value or b"")),
                    ),
                )
                key, value = (
                    key[:cut] if key is not None else None,
                    value[:cut] if value is not None else None,
                )
            # A record `streamflow dlq replay` sent back keeps its replay count in its next dead
            # letter.
            headers += tuple(
                (k, v) for k, v in getattr(m, "headers", None) or () if k == H_REPLAYED
            )
            rejected.append(
                Rejected(
                    stage=self.stage,
                    error_class=(DecodeError if error is not None else ValidationError).__name__,
                    reason=why.text,
                    code=why.code,
                    source_topic=topic,
                    source_partition=partition,
                    source_offset=m.offset,
                    key=key,
                    value=value,
                    ingest_ms=int(m.timestamp),
                    headers=headers,
                )
            )
        return (batch if c.ok.all() else batch.select(c.ok)), rejected

    async def transform(self, inputs: Sequence[Chunk]) -> StepOutput:
        out = StepOutput()
        for c in inputs:
            batch, bad = self.process(c.topic, c.partition, c.records)
            out.rejected += bad
            if len(batch):
                out.batches.append(batch)
        return out


def raw_weight(record: Any) -> int:
    """A raw record weighs 1, plus 1 for every ``WEIGHT_BYTES`` of key and value."""
    return 1 + (len(record.value or b"") + len(record.key or b"")) // WEIGHT_BYTES
