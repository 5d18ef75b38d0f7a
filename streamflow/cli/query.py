"""``streamflow query "SQL"``: SQL over the stored results, in-process (``store/query.py``).

    streamflow query "SELECT label, count(*) FROM results WHERE date = '2026-12-01' GROUP BY 1"
    streamflow query --summary --pipeline pipelines/fleet-health.toml
    streamflow query "SELECT * FROM dead_letters" --format jsonl --out dead.jsonl

Views: ``results`` (one row per source record), ``results_all`` (every stored row),
``dead_letters``; ``date`` and ``hour`` (UTC, of the record's event time) come from the folders,
and a filter on them reads only those folders' files. Output: an aligned table (the first
``--max-rows`` rows), CSV, JSON lines, or Parquet (``--out FILE``).

``--summary``: per date, hour and model version, the records, each label's share and the mean
score, from ``results``. The label and the score are the model's output columns: the columns of
``results`` that are not the pipeline's key or timestamp field, its ``[result]`` pass-through
or metadata fields, nor the store's own. Among them the label is the first text column
(telemetry ``label``, fleet-health ``health``, text ``label``) and the score the first single
number (telemetry ``score``, text ``label_score``). When the only numbers are one probability
per class (columns ``<field>_<class>``, two or more, such as fleet-health's ``p_healthy`` ...
``p_disk``), the score is the largest of them: the probability of the winning class
(``mean_max_p``). A threshold label shows only the share of its upper label (``anomaly_rate``);
other labels show each value's share (``<value>_rate``, in the declared order, else by count;
the eighth and beyond summed as ``other_rate``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import IO, Any

from streamflow.errors import ConfigError
from streamflow.settings import Settings
from streamflow.store.files import StoreError
from streamflow.store.query import StoreQuery, SummarySpec, ident, open_store, summary
from streamflow.store.tables import STORE_COLUMNS

FORMATS = ("table", "csv", "jsonl", "parquet")
BATCH_ROWS = 65_536
CELL = 60  # characters of a cell shown in a table
NUMBERS = ("DOUBLE", "FLOAT", "REAL")


def summary_spec(settings: Settings, columns: Sequence[str], types: Sequence[str]) -> SummarySpec:
    """The label and score columns of ``results`` (the rule in this module's docstring)."""
    from streamflow.inference.outputs import default_outputs

    s = settings
    not_outputs = {s.input.key_field, s.input.timestamp_field, *s.result.pass_through}
    not_outputs |= {*s.result.metadata, *STORE_COLUMNS, "date", "hour"}
    outputs = [(c, t) for c, t in zip(columns, types, strict=True) if c not in not_outputs]
    texts = [c for c, t in outputs if t == "VARCHAR"]
    numbers = [c for c, t in outputs if t in NUMBERS]
    by_prefix: dict[str, list[str]] = {}
    for c in numbers:
        by_prefix.setdefault(c.rsplit("_", 1)[0] if "_" in c else c, []).append(c)
    per_class = {p: cs for p, cs in by_prefix.items() if len(cs) > 1 and "_" in cs[0]}
    singles = [c for c in numbers if not any(c in cs for cs in per_class.values())]
    score, score_name = "", ""
    if singles:
        score, score_name = ident(singles[0]), f"mean_{singles[0]}"
    elif per_class:
        prefix, cs = next(iter(per_class.items()))
        score, score_name = f"greatest({', '.join(ident(c) for c in cs)})", f"mean_max_{prefix}"
    label = texts[0] if texts else ""
    labels: tuple[str, ...] = ()
    only = ""
    if s.model.kind == "text-embedding":
        labels = tuple(name for name, _ in s.labels)
    else:
        declared = s.outputs or (default_outputs(s) if s.model.kind == "tabular" else ())
        for o in declared:
            if o.field == label and o.labels:
                labels = o.labels
                only = o.labels[-1] if o.post == "threshold" else ""
    return SummarySpec(label, labels, only, score, score_name)


def summary_table(store: StoreQuery, settings: Settings) -> Any:
    """The ``--summary`` table (an Arrow table) of ``results``."""
    rel = store.query("SELECT * FROM results LIMIT 0")
    columns, types = list(rel.columns), [str(t) for t in rel.types]
    return summary(store, summary_spec(settings, columns, types), columns)


# ----------------------------------------------------------------------------------- writers


def _text(v: Any, cell: int = 0) -> str:
    """One value as a table cell shows it (``cell``: at most that many characters, numbers to
    6 significant digits), or as CSV writes it (``cell`` 0: in full)."""
    if v is None:
        return "NULL"
    if isinstance(v, float):
        return f"{v:.6g}" if cell else repr(v)
    if isinstance(v, dt.datetime):
        out = v.isoformat(sep=" ", timespec="milliseconds")
    elif isinstance(v, bytes):
        out = v.decode("utf-8", "backslashreplace")
    elif isinstance(v, list | dict):
        out = json.dumps(v, default=_json_default)
    else:
        out = str(v)
    return out if not cell or len(out) <= cell else out[: cell - 1] + "…"


def _json_default(v: Any) -> Any:
    if isinstance(v, dt.datetime | dt.date | dt.time):
        return v.isoformat()
    if isinstance(v, bytes):
        return v.decode("utf-8", "backslashreplace")
    return str(v)  # Decimal, UUID, timedelta


def _numeric(t: Any) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t))


def write_table(reader: Any, out: IO[str], max_rows: int) -> int:
    """An aligned table of the first ``max_rows`` rows (numbers right-aligned); rows read."""
    names = reader.schema.names
    right = [_numeric(f.type) for f in reader.schema]
    rows: list[list[str]] = []
    more = False
    for batch in reader:
        for rec in batch.to_pylist():
            if len(rows) == max_rows:
                more = True
                break
            rows.append([_text(rec[n], CELL) for n in names])
        if more:
            break
    widths = [max([len(n), *(len(r[i]) for r in rows)]) for i, n in enumerate(names)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right, strict=True)
        ).rstrip()

    out.write(line(names) + "\n" + line(["-" * w for w in widths]) + "\n")
    for r in rows:
        out.write(line(r) + "\n")
    shown = f"first {len(rows)} rows shown; --format csv|jsonl|parquet for all" if more else ""
    out.write(f"({shown or f'{len(rows)} row' + ('' if len(rows) == 1 else 's')})\n")
    return len(rows)


def write_csv(reader: Any, out: IO[str]) -> int:
    """CSV with a header; numbers in full, lists as JSON, bytes as text with \\x escapes, NULL
    as an empty field."""
    import csv

    w = csv.writer(out, lineterminator="\n")
    names = reader.schema.names
    w.writerow(names)
    n = 0
    for batch in reader:
        for rec in batch.to_pylist():
            w.writerow(["" if rec[c] is None else _text(rec[c]) for c in names])
            n += 1
    return n


def write_jsonl(reader: Any, out: IO[str]) -> int:
    """One JSON object per row; times as ISO 8601, bytes as text with \\x escapes."""
    n = 0
    for batch in reader:
        for rec in batch.to_pylist():
            out.write(json.dumps(rec, default=_json_default, ensure_ascii=False) + "\n")
            n += 1
    return n


def write_parquet(reader: Any, path: str) -> int:
    import pyarrow.parquet as pq

    n = 0
    with pq.ParquetWriter(path, reader.schema, compression="zstd") as w:
        for batch in reader:
            w.write_batch(batch)
            n += batch.num_rows
    return n


@contextmanager
def _opened(path: str | None) -> Iterator[IO[str]]:
    if not path or path == "-":
        yield sys.stdout
        return
    with open(path, "w", newline="", encoding="utf-8") as f:
        yield f


def write(reader: Any, fmt: str, path: str | None, max_rows: int = 1000) -> int:
    """``reader`` (Arrow record batches) in ``fmt`` to ``path`` (stdout when empty); rows."""
    if fmt == "parquet":
        if not path or path == "-":
            raise ConfigError("--format parquet: give the file with --out FILE")
        return write_parquet(reader, path)
    with _opened(path) as out:
        if fmt == "csv":
            return write_csv(reader, out)
        if fmt == "jsonl":
            return write_jsonl(reader, out)
        return write_table(reader, out, max_rows)


def reader_of(table: Any) -> Any:
    import pyarrow as pa

    return pa.RecordBatchReader.from_batches(table.schema, table.to_batches())


# ----------------------------------------------------------------------------------- command


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Declare ``streamflow query [SQL] [--summary] [--format F] [--out FILE]``."""
    from streamflow.cli import settings_args

    q = sub.add_parser(
        "query",
        help="SQL over the stored results (views results, results_all, dead_letters)",
        description="SQL (DuckDB, in-process) over the store at store.path: views results (one "
        "row per source record), results_all (every stored row) and dead_letters, with date and "
        "hour columns (UTC event time; a filter on them reads only those folders).",
    )
    q.add_argument("sql", nargs="?", help="one SELECT over results, results_all, dead_letters")
    q.add_argument(
        "--summary",
        action="store_true",
        help="records, label shares and mean score per hour and model version",
    )
    q.add_argument("--format", choices=FORMATS, default="table")
    q.add_argument("--out", default="", metavar="FILE", help="write here (default: stdout)")
    q.add_argument(
        "--max-rows", type=int, default=1000, help="rows a table shows (other formats: all)"
    )
    settings_args(q)
    q.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the query (or the summary) and write its rows; exit 1 on a store or query error."""
    from streamflow.cli import load

    if bool(args.sql) == bool(args.summary):
        raise ConfigError("query: give either SQL or --summary", source="command line")
    settings = load(args)
    try:
        return query_command(settings, args.sql, args.summary, args.format, args.out, args.max_rows)
    except StoreError as exc:
        print(f"streamflow: error: {exc}", file=sys.stderr)
        return 1


def query_command(
    settings: Settings, sql: str | None, summarize: bool, fmt: str, out: str, max_rows: int
) -> int:
    """Open the store, run, write; StoreError for anything the store or DuckDB refuses."""
    import duckdb

    store = open_store(settings)
    try:
        for note in store.notes_for("results" if summarize else sql or ""):
            print(note, file=sys.stderr)
        try:
            if summarize:
                reader = reader_of(summary_table(store, settings))
            else:
                reader = store.query(sql or "").to_arrow_reader(BATCH_ROWS)
            write(reader, fmt, out, max_rows)
        except (duckdb.Error, OSError) as exc:
            if isinstance(exc, BrokenPipeError):
                raise
            raise StoreError(f"query: {exc}") from None
        return 0
    finally:
        store.close()
