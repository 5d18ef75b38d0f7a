"""SQL over the store with DuckDB, in-process: the views ``results``, ``results_all`` and
``dead_letters`` (``streamflow query``).

``results_all`` is every stored result row; ``dead_letters`` every stored dead letter. Both read
the files with ``read_parquet(..., hive_partitioning, union_by_name)``, so ``date`` (DATE) and
``hour`` (INTEGER, 0-23) are columns taken from the folder names, and a file written with an
older schema reads with NULLs for the fields it lacks.

``results`` is one row per source record: the at-least-once pipeline may score a raw record
twice, and each result lands at its own sink offset. The row kept is the first by
``(kafka_partition, kafka_offset)``; rows without source coordinates are all kept. The window
partitions by ``date, hour`` before the source coordinates (a repeat has its record's event time,
so it lands in the same hour), which lets DuckDB push a filter on ``date`` or ``hour`` through
the window into the scan: such a query reads the files of those folders only
(``EXPLAIN ANALYZE`` shows ``Total Files Read``). A repeat whose result has no event time of its
own (filed by its Kafka timestamp) and crosses an hour boundary is the one case left in
``results`` twice.

S3 is read through an fsspec filesystem (``s3fs``) registered with the connection: DuckDB's
httpfs extension is never installed nor loaded (autoinstall and autoload of extensions are
switched off), so nothing is downloaded at run time.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from streamflow.settings import Settings
from streamflow.store.files import TABLES, S3Options, StoreError, storage_for
from streamflow.store.tables import STORE_COLUMNS, arrow_type, dead_letter_schema

PARTITIONS = "hive_partitioning = true, hive_types = {'date': DATE, 'hour': INTEGER}"
FILES = "date=*/hour=*/*.parquet"
UNION = "union_by_name = true"  # a file of an older schema reads with NULLs for the new fields
# results: the first row of each (hour, source record); rows without coordinates all stay
RESULTS_VIEW = """
CREATE OR REPLACE VIEW results AS
SELECT * FROM results_all
QUALIFY row_number() OVER (
    PARTITION BY date, hour, sf_source_topic, sf_source_partition, sf_source_offset,
        CASE WHEN sf_source_offset IS NULL THEN kafka_partition END,
        CASE WHEN sf_source_offset IS NULL THEN kafka_offset END
    ORDER BY kafka_partition, kafka_offset
) = 1
"""
DUCKDB_TYPES = {  # Arrow type (as pyarrow names it) -> DuckDB, for the empty views
    "string": "VARCHAR",
    "int32": "INTEGER",
    "int64": "BIGINT",
    "double": "DOUBLE",
    "float": "FLOAT",
    "bool": "BOOLEAN",
    "binary": "BLOB",
    "timestamp[ms, tz=UTC]": "TIMESTAMPTZ",
    "list<item: float>": "FLOAT[]",
    "list<item: double>": "DOUBLE[]",
}


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def s3_filesystem(o: S3Options) -> Any:
    """An ``s3fs`` filesystem with the store's S3 options: endpoint, region and credentials from
    ``[store]`` (else the AWS chain, as botocore reads it), and the same bounds on each request
    as the store step's (connect and read timeouts, attempts), so an endpoint that does not
    answer fails in seconds."""
    import s3fs

    fs = s3fs.S3FileSystem(
        key=o.access_key_id or None,
        secret=o.secret_access_key.reveal() or None,
        endpoint_url=o.endpoint or None,
        client_kwargs={"region_name": o.region} if o.region else {},
        config_kwargs={
            "connect_timeout": o.connect_timeout_s,
            "read_timeout": o.request_timeout_s,
            "retries": {"max_attempts": o.attempts, "mode": "standard"},
        },
        skip_instance_cache=True,
    )
    fs.retries = 1  # s3fs's own loop around botocore's attempts: botocore's are enough
    return fs


@dataclass
class StoreQuery:
    """A DuckDB connection with the store's views. ``notes``: by view, what a user should know
    about its answer (the view is empty: nothing stored yet)."""

    con: Any
    root: str  # the store, as DuckDB reads it: a folder or s3://bucket/prefix
    notes: dict[str, str] = field(default_factory=dict)

    def notes_for(self, sql: str) -> list[str]:
        """The notes of the views ``sql`` names."""
        low = sql.lower()
        return list(dict.fromkeys(n for view, n in self.notes.items() if view in low))

    def query(self, sql: str) -> Any:
        """The relation of one SQL query over the views (lazy: it runs when read)."""
        import duckdb

        try:
            rel = self.con.sql(sql)
        except duckdb.Error as exc:
            raise StoreError(f"query: {exc}") from None
        if rel is None:
            raise StoreError("query: the statement returns no rows (give a SELECT)")
        return rel

    def close(self) -> None:
        self.con.close()


def open_store(settings: Settings) -> StoreQuery:
    """DuckDB over ``store.path`` (a folder or s3://bucket/prefix). A folder that does not
    exist, a bucket that does not, or an endpoint that does not answer: StoreError naming
    ``store.path``. A store with no file yet gives empty views and a note."""
    import duckdb

    path = settings.store.path
    if not path:
        raise StoreError("store.path is not set: give it with --set store.path=FOLDER|s3://...")
    con = duckdb.connect()
    for setting in (
        "SET autoinstall_known_extensions = false",
        "SET autoload_known_extensions = false",
        "SET TimeZone = 'UTC'",
    ):
        con.execute(setting)
    if path.startswith("s3://"):
        fs = s3_filesystem(storage_for(settings).s3_options)  # ConfigError: a wrong endpoint
        root = path.rstrip("/")
        bucket, _, prefix = root[len("s3://") :].partition("/")
        try:
            present = {
                t: _any_object(fs, bucket, f"{prefix}/{t}/date=".lstrip("/")) for t in TABLES
            }
        except Exception as exc:  # botocore's and aiohttp's errors: no bucket, no answer, denied
            raise StoreError(
                f"store.path: cannot read {path}: {type(exc).__name__}: {exc}"
            ) from None
        con.register_filesystem(fs)
    else:
        root = os.path.abspath(path)
        if not os.path.isdir(root):
            raise StoreError(f"store.path: {path} is not a folder (nothing stored there)")
        present = {t: _any_file(os.path.join(root, t)) for t in TABLES}
    store = StoreQuery(con, root)
    try:
        for table, view in (("results", "results_all"), ("dead_letters", "dead_letters")):
            if present[table]:
                source = f"read_parquet({_literal(f'{root}/{table}/{FILES}')}, {PARTITIONS}"
                con.execute(f"CREATE OR REPLACE VIEW {view} AS SELECT * FROM {source}, {UNION})")
            else:
                con.execute(f"CREATE OR REPLACE VIEW {view} AS {_empty(table, settings)}")
                note = f"note: no {table} stored in {path} yet: {view} is empty"
                store.notes[view] = note
                if view == "results_all":
                    store.notes["results"] = note
        con.execute(RESULTS_VIEW)
    except duckdb.Error as exc:  # a file that is no Parquet, a store that stopped answering
        con.close()
        raise StoreError(f"store.path: cannot read {path}: {exc}") from None
    return store


def _any_object(fs: Any, bucket: str, prefix: str) -> bool:
    """Whether a ``*.parquet`` key starts with ``prefix``: the first page of the listing answers
    (a folder marker an S3 client left, ``.../hour=07/``, is no file)."""
    token: dict[str, str] = {}
    while True:
        page = fs.call_s3("list_objects_v2", Bucket=bucket, Prefix=prefix, **token)
        if any(o["Key"].endswith(".parquet") for o in page.get("Contents", [])):
            return True
        if not page.get("IsTruncated"):
            return False
        token = {"ContinuationToken": page["NextContinuationToken"]}


def _any_file(folder: str) -> bool:
    """Whether ``folder`` holds a file the views' glob matches (temporary files do not)."""
    return next(glob.iglob(os.path.join(glob.escape(folder), *FILES.split("/"))), None) is not None


def _empty(table: str, settings: Settings) -> str:
    """A SELECT of no rows with the table's columns: the result schema's fields (when
    ``output.schema`` names it), the store's columns, date and hour."""
    import pyarrow as pa

    store_types = {f.name: f.type for f in dead_letter_schema() if f.name in STORE_COLUMNS}
    if table == "dead_letters":
        fields = list(dead_letter_schema())
    else:
        fields = []
        if settings.output.schema:
            try:
                with open(settings.output.schema) as f:
                    avro = json.load(f)
                fields = [pa.field(x["name"], arrow_type(x["type"])) for x in avro["fields"]]
            except (OSError, ValueError, KeyError, TypeError):
                fields = []
        fields += [pa.field(c, store_types[c]) for c in STORE_COLUMNS]
    cols = [
        f"CAST(NULL AS {DUCKDB_TYPES.get(str(f.type), 'VARCHAR')}) AS {ident(f.name)}"
        for f in fields
    ]
    cols += ["CAST(NULL AS DATE) AS date", "CAST(NULL AS INTEGER) AS hour"]
    return f"SELECT {', '.join(cols)} WHERE false"


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# ----------------------------------------------------------------------------------- summary


@dataclass(frozen=True)
class SummarySpec:
    """Which columns of ``results`` the summary reads (chosen by the command from the pipeline).

    ``label``: the label column; ``labels``: its values in the order shown (empty: by count);
    ``only``: show the share of this label alone (a threshold's upper label, "anomaly");
    ``score``: a SQL expression of the score (a column, or ``greatest(p_a, p_b)``) and
    ``score_name`` its column in the summary."""

    label: str = ""
    labels: tuple[str, ...] = ()
    only: str = ""
    score: str = ""
    score_name: str = ""


MAX_LABELS = 8  # label shares shown; the rest are summed into other_rate


def summary(store: StoreQuery, spec: SummarySpec, columns: Sequence[str]) -> Any:
    """Per date, hour and model version of ``results``: records, each label's share, the mean
    score. An Arrow table, ordered by date, hour and version."""
    import pyarrow as pa

    version = "model_version" if "model_version" in columns else "CAST(NULL AS VARCHAR)"
    label = ident(spec.label) if spec.label else "CAST(NULL AS VARCHAR)"
    score = spec.score or "CAST(NULL AS DOUBLE)"
    rows = store.query(
        f"SELECT date, hour, {version} AS model_version, {label} AS label, count(*) AS n, "
        f"sum({score}) AS total, count({score}) AS scored "
        "FROM results GROUP BY ALL"
    ).fetchall()
    groups: dict[tuple[Any, Any, Any], dict[str, Any]] = {}
    counts: dict[str, int] = {}
    for date, hour, ver, lab, n, total, scored in rows:
        g = groups.setdefault((date, hour, ver), {"n": 0, "labels": {}, "total": 0.0, "scored": 0})
        g["n"] += n
        g["total"] += total or 0.0
        g["scored"] += scored
        if lab is not None:
            g["labels"][str(lab)] = g["labels"].get(str(lab), 0) + n
            counts[str(lab)] = counts.get(str(lab), 0) + n
    if spec.only:
        shown = [spec.only]
    else:
        seen = sorted(counts, key=lambda v: (-counts[v], v))
        shown = [v for v in spec.labels if v in counts] + [v for v in seen if v not in spec.labels]
    other = len(shown) > MAX_LABELS and not spec.only
    shown = shown[:MAX_LABELS]
    keys = sorted(groups, key=lambda k: tuple((x is None, x if x is not None else 0) for x in k))
    out: dict[str, list[Any]] = {"date": [], "hour": [], "model_version": [], "records": []}
    for v in shown:
        out[f"{v}_rate"] = []
    if other:
        out["other_rate"] = []
    if spec.score:
        out[spec.score_name] = []
    for k in keys:
        g = groups[k]
        out["date"].append(k[0])
        out["hour"].append(k[1])
        out["model_version"].append(k[2])
        out["records"].append(g["n"])
        for v in shown:
            out[f"{v}_rate"].append(g["labels"].get(v, 0) / g["n"] if spec.label else None)
        if other:
            rest = g["n"] - sum(g["labels"].get(v, 0) for v in shown)
            out["other_rate"].append(rest / g["n"])
        if spec.score:
            out[spec.score_name].append(g["total"] / g["scored"] if g["scored"] else None)
    types = {
        "date": pa.date32(),
        "hour": pa.int32(),
        "model_version": pa.string(),
        "records": pa.int64(),
    }
    return pa.table({c: pa.array(v, types.get(c, pa.float64())) for c, v in out.items()})
