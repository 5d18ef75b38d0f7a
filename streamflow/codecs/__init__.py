"""Bytes <-> records: the only package that sees bytes (with ``flatavro``, its generated Avro code).

- Avro with fastavro: schemaless bytes with the schema from ``schemas/``, or the Confluent
  wire format (magic byte 0 + 4-byte schema id + Avro, or the id in a ``__value_schema_id``
  header) when a schema registry URL is set, through confluent-kafka's schema-registry client
  configured by ``[schema_registry]`` (``schema_registry(settings)``).
- JSON: one object per message, the same field names as the Avro schema.
- Text records (``TextDecoder``) for text pipelines; results of every kind (``ResultEncoder``)
  for the result schema, given or generated from the pipeline's declaration.
- Columnar record batches for the internal topics (``SFB2``): a JSON header naming each column, raw
  numpy buffers, decoded zero-copy.

A bad record never raises out of ``decode_batch``: it gets a precise reason instead, and
no record makes it allocate more than the pipeline's ``[limits]`` allow (a length prefix is
checked before anything is read for it). Only a fault around the records (the schema
registry does not answer) raises, as an ``InfrastructureError``.
"""

from streamflow.codecs.avro import (
    VALUE_SCHEMA_ID_HEADER,
    WIRE_MAGIC,
    RecordCodec,
    SchemaRegistry,
    _strip_logical_types,
    load_schema,
    registry_for,
    schema_registry,
)
from streamflow.codecs.batches import (
    MAGIC,
    decode_record_batch,
    encode_record_batch,
    encode_record_batches,
    record_batch_length,
)
from streamflow.codecs.readings import DecodedReadings, ReadingDecoder
from streamflow.codecs.results import (
    ResultEncoder,
    to_json_line,
)
from streamflow.codecs.texts import DecodedTexts, TextDecoder

__all__ = [
    "MAGIC",
    "VALUE_SCHEMA_ID_HEADER",
    "WIRE_MAGIC",
    "DecodedReadings",
    "DecodedTexts",
    "ReadingDecoder",
    "RecordCodec",
    "ResultEncoder",
    "SchemaRegistry",
    "TextDecoder",
    "_strip_logical_types",
    "decode_record_batch",
    "encode_record_batch",
    "encode_record_batches",
    "load_schema",
    "record_batch_length",
    "registry_for",
    "schema_registry",
    "to_json_line",
]
