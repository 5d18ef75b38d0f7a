"""Raw input messages (Avro, wire format or JSON) -> the text field of each record, or a reason
per row."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamflow.codecs.avro import SchemaRegistry
from streamflow.codecs.readings import ReadingDecoder
from streamflow.errors import DecodeError, InfrastructureError
from streamflow.records import ReasonCode
from streamflow.settings import LimitSettings


@dataclass(frozen=True)
class DecodedTexts:
    """A batch of decoded text records; ``errors[i]`` is set where row i could not be decoded,
    ``codes[i]`` is its ``ReasonCode``."""

    texts: list[
        object
    ]  # the text field as decoded: None where absent or undecodable (checked by clean_texts)
    device_ids: list[str]  # the key field
    event_ms: np.ndarray  # int64[n]
    errors: list[str | None]
    codes: list[ReasonCode | None]
    columns: dict[str, np.ndarray] = field(default_factory=dict)  # pass-through fields


class TextDecoder:
    """Decodes text records with the same formats, limits and reasons as ``ReadingDecoder``."""

    def __init__(
        self,
        schema_path: str,
        text_field: str,
        *,
        format: str = "auto",
        key_field: str = "id",
        timestamp_field: str = "timestamp",
        registry: SchemaRegistry | None = None,
        limits: LimitSettings | None = None,
        columns: Sequence[str] = (),
    ) -> None:
        self.columns = list(columns)  # fields carried along as they are (pass-through)
        self.records = ReadingDecoder(
            schema_path,
            [],
            format=format,
            key_field=key_field,
            timestamp_field=timestamp_field,
            registry=registry,
            limits=limits,
        )
        self.text_field, self.key_field, self.ts_field = text_field, key_field, timestamp_field

    @property
    def registry(self) -> SchemaRegistry | None:
        """The registry its records are read through (None: no schema ids in headers)."""
        return self.records.registry

    def decode_batch(
        self,
        values: Sequence[bytes | None],
        keys: Sequence[bytes | None] | None = None,
        headers: Sequence[Any] | None = None,
    ) -> DecodedTexts:
        key_bytes = [0] * len(values) if keys is None else [len(k) if k else 0 for k in keys]
        schema_headers = self.records.schema_headers(headers, len(values))
        texts: list[object] = []
        device_ids: list[str] = []
        event_ms: list[int] = []
        errors: list[str | None] = []
        codes: list[ReasonCode | None] = []
        extra: dict[str, list[Any]] = {name: [] for name in self.columns}
        dev: Any
        ts: Any
        for value, kb, sh in zip(values, key_bytes, schema_headers, strict=True):
            reason: str | None = None
            code: ReasonCode | None = None
            try:
                rec = self.records.decode_one(value, kb, sh)
                dev, ts = rec.get(self.key_field), rec.get(self.ts_field)
                if (
                    not isinstance(dev, str)
                    or not isinstance(ts, int)
                    or not -(2**63) <= ts < 2**63
                ):
                    name = self.key_field if not isinstance(dev, str) else self.ts_field
                    raise DecodeError(f"missing field {name}", ReasonCode.MISSING_FIELD)
            except DecodeError as exc:
                reason, code = exc.reason, exc.code
            except InfrastructureError:
                raise  # the registry does not answer: not this record's fault
            except Exception as exc:
                reason, code = self.records._bug(exc), ReasonCode.OTHER
            if reason is not None:
                texts.append(None)
                device_ids.append("")
                event_ms.append(0)
            else:
                texts.append(rec.get(self.text_field))
                device_ids.append(dev)
                event_ms.append(ts)
            for name, col in extra.items():
                col.append(None if reason is not None else rec.get(name))
            errors.append(reason)
            codes.append(code)
        columns: dict[str, np.ndarray] = {}
        for name, items in extra.items():
            columns[name] = np.empty(len(items), dtype=object)
            columns[name][:] = items
        return DecodedTexts(
            texts, device_ids, np.array(event_ms, dtype=np.int64), errors, codes, columns
        )
