"""Results stored as Parquet, exactly once, and queried with SQL (``streamflow query``).

The store step (``agents/store.py``) writes what this package lays out:

    <store.path>/results/date=YYYY-MM-DD/hour=HH/<topic>+<partition>+<first offset>.parquet
    <store.path>/dead_letters/date=YYYY-MM-DD/hour=HH/<topic>+<partition>+<first offset>.parquet

The date and hour are the result's own event time (its timestamp field), a dead letter's the
time its raw message was produced (``sf-ingest-ms``), UTC. The first offset is zero-padded to 19
digits, so names sort as offsets do. A file holds consecutive offsets of one partition of one
topic; its key-value metadata (``streamflow.*``) names them, with the schema it was written
from. ``files.py`` publishes a file whole or not at all and reads the high-water mark back;
``tables.py`` turns records into Arrow tables; ``query.py`` is DuckDB over the files.
"""
