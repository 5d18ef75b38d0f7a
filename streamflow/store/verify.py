"""The store checked (``streamflow store verify``) and its small files merged (``... compact``).

**verify** reads every file's footer and, per table, topic and partition, sorts the files by
their offsets. An error: an overlap (an offset in two files), a gap (offsets in no file) that the
store's own dead letters do not explain, a file whose name, folder or ``streamflow.*`` metadata
disagree, a half-written temporary file older than ``STALE_TEMP_S`` (a writer died). Told, not
errors: the first stored offset above 0 (the store began later, or retention removed the start),
a gap whose every offset is a result the store dead-lettered (it did not decode), a temporary
file being written now.

**compact** merges, in one folder (table, date, hour) and one partition, runs of files whose
offsets are contiguous (each file's first offset is the previous file's last plus one, and no
file of another hour lies between them), with the same schema, up to ``max_rows`` rows per
merged file. The merged file is written under the first file's name: locally to a temporary
file renamed over it, on S3 by one PUT that replaces the object; only once it is in place, and
its footer reads back with every row, are the run's other files deleted.

What a reader sees meanwhile: before the rename, the old files; between the rename and the last
delete, the merged file and some of the run's later files, so their rows are in ``results_all``
(and ``dead_letters``) twice, while ``results`` (one row per source record, the first by Kafka
offset; the copies are identical) shows each once; after, the merged file. At no moment is a
row in no listed file, so no query misses one. A query that lists a file compact deletes before
it reads it fails (a missing file) rather than answering: run it again. A crash between the
rename and the deletes leaves files whose offsets lie inside the merged file's (its metadata says
``compacted``); ``verify`` reports them and the next ``compact`` deletes them.

Published files are never appended to (the store step writes each once, whole, under a name no
other file has), so compact may merge a partition's newest file while the store step runs: its
next file starts after the merged file's last offset, and the resume point it reads after a
restart (the last offset of the file with the highest first offset) is unchanged. Run one
``compact`` at a time.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from streamflow.store.files import (
    META,
    TABLES,
    Storage,
    StoreError,
    parse_name,
)

FOLDER = re.compile(r"^(?P<table>[a-z_]+)/date=(?P<date>\d{4}-\d{2}-\d{2})/hour=(?P<hour>\d{2})/")
STALE_TEMP_S = 600.0  # a temporary file this old belongs to a writer that died
MAX_ROWS = 1_000_000  # rows per merged file


@dataclass(frozen=True)
class Stored:
    """One stored file as its footer describes it."""

    path: str  # relative to the store
    table: str
    folder: str  # date=.../hour=...
    topic: str
    partition: int
    first: int
    last: int
    rows: int  # rows in the footer
    meta: dict[str, str]
    size: int = 0

    @property
    def compacted(self) -> bool:
        return bool(self.meta.get("compacted"))


@dataclass
class Report:
    """What ``verify`` found: ``errors`` make it fail; ``infos`` are told."""

    files: int = 0
    partitions: int = 0
    errors: list[str] = field(default_factory=list)
    infos: list[str] = field(default_factory=list)


def read_footers(storage: Storage, table: str, problems: list[str]) -> list[Stored]:
    """Every published file of ``table``; a file whose name or metadata is wrong is added to
    ``problems`` (and left out when its offsets cannot be known)."""
    import pyarrow.parquet as pq

    out = []
    for rel in storage.files(table):
        parsed = parse_name(rel)
        folder = FOLDER.match(rel)
        assert parsed is not None  # Storage.files lists only stored names
        if folder is None or folder["table"] != table:
            problems.append(f"{rel}: not in a {table}/date=YYYY-MM-DD/hour=HH folder")
            continue
        try:
            with storage.fs.open_input_file(storage.full(rel)) as f:
                md = pq.read_metadata(f)
                size = int(f.size())
        except Exception as exc:
            problems.append(f"{rel}: unreadable footer: {exc}")
            continue
        meta = {
            k.decode()[len(META) :]: v.decode()
            for k, v in (md.metadata or {}).items()
            if k.decode().startswith(META)
        }
        topic, partition, first = parsed
        wrong = []
        for key, named in (("topic", topic), ("partition", partition), ("first_offset", first)):
            if meta.get(key) != str(named):
                wrong.append(f"{key} {meta.get(key, 'missing')} (name: {named})")
        if meta.get("rows") != str(md.num_rows):
            wrong.append(f"rows {meta.get('rows', 'missing')} (footer: {md.num_rows})")
        try:
            last = int(meta["last_offset"])
        except (KeyError, ValueError):
            problems.append(f"{rel}: no streamflow.last_offset in its metadata")
            continue
        if last < first or (md.num_rows > last - first + 1):
            wrong.append(f"last_offset {last} (first {first}, {md.num_rows} rows)")
        if wrong:
            problems.append(f"{rel}: name and metadata disagree: {'; '.join(wrong)}")
        hour = f"date={folder['date']}/hour={folder['hour']}"
        out.append(Stored(rel, table, hour, topic, partition, first, last, md.num_rows, meta, size))
    return out


def by_partition(files: Iterable[Stored]) -> dict[tuple[str, str, int], list[Stored]]:
    """Files per (table, topic, partition), sorted by offsets."""
    out: dict[tuple[str, str, int], list[Stored]] = {}
    for f in files:
        out.setdefault((f.table, f.topic, f.partition), []).append(f)
    for fs in out.values():
        fs.sort(key=lambda f: (f.first, -f.last))
    return out


def _inside(f: Stored, of: Stored) -> bool:
    """``f`` is a leftover of the compaction that wrote ``of``."""
    return of.compacted and f.folder == of.folder and of.first <= f.first and f.last <= of.last


def verify(storage: Storage, tables: Iterable[str] = TABLES) -> Report:
    """Check every file of ``tables`` (see the module docstring)."""
    report = Report()
    files: list[Stored] = []
    for table in tables:
        files += read_footers(storage, table, report.errors)
        now = time.time()
        for tmp in storage.temp_files(table):
            age = now - _mtime(tmp)
            if age >= STALE_TEMP_S:
                report.errors.append(
                    f"{tmp}: half-written file left by a writer that died "
                    f"({age / 60:.0f} min old; never read, safe to delete)"
                )
            else:
                report.infos.append(f"{tmp}: being written now ({age:.0f} s old)")
    report.files = len(files)
    parts = by_partition(files)
    report.partitions = len(parts)
    explained: set[tuple[str, int, int]] | None = None
    for (table, topic, partition), fs in sorted(parts.items()):
        name = f"{table} {topic}[{partition}]"
        if fs[0].first > 0:
            report.infos.append(
                f"{name}: starts at offset {fs[0].first} (the store began later, or the "
                "topic's retention removed the earlier offsets)"
            )
        top = fs[0]  # the file reaching furthest so far
        for f in fs[1:]:
            if f.first <= top.last:
                if _inside(f, top):
                    report.errors.append(
                        f"{name}: {f.path} (offsets {f.first}-{f.last}) is also in {top.path}: "
                        "left by an interrupted compact; `streamflow store compact` removes it"
                    )
                else:
                    report.errors.append(
                        f"{name}: overlap: offsets {f.first}-{min(f.last, top.last)} are in "
                        f"{top.path} and {f.path}"
                    )
            elif f.first > top.last + 1:
                lo, hi = top.last + 1, f.first - 1
                if explained is None:
                    explained = _store_dead_letters(storage)
                missing = range(lo, hi + 1)
                if len(missing) <= len(explained) and all(
                    (topic, partition, o) in explained for o in missing
                ):
                    report.infos.append(
                        f"{name}: offsets {lo}-{hi} are dead letters of the store step "
                        "(results that did not decode)"
                    )
                else:
                    report.errors.append(
                        f"{name}: gap: offsets {lo}-{hi} ({hi - lo + 1}) are in no file, "
                        f"between {top.path} and {f.path}"
                    )
            if f.last > top.last:
                top = f
    return report


def _mtime(path: str) -> float:
    try:
        return os.path.getmtime(path)
    except OSError:
        return time.time()


def _store_dead_letters(storage: Storage) -> set[tuple[str, int, int]]:
    """(topic, partition, offset) of every result the store step dead-lettered."""
    import pyarrow.parquet as pq

    out: set[tuple[str, int, int]] = set()
    for rel in storage.files("dead_letters"):
        cols = ["stage", "sf_source_topic", "sf_source_partition", "sf_source_offset"]
        try:
            with storage.fs.open_input_file(storage.full(rel)) as f:
                t = pq.read_table(f, columns=cols)
        except Exception:
            continue  # the file's own problem is reported with dead_letters
        for stage, topic, partition, offset in zip(*(t[c].to_pylist() for c in cols), strict=True):
            if stage == "store" and offset is not None:
                out.add((topic, partition, offset))
    return out


# ----------------------------------------------------------------------------------- compact


@dataclass
class Compacted:
    """What ``compact`` did."""

    merged: int = 0  # files written
    replaced: int = 0  # files they replaced (deleted, or overwritten by the merged file)
    leftovers: int = 0  # files of an interrupted compact deleted
    rows: int = 0  # rows in the merged files
    done: list[str] = field(default_factory=list)  # one line per merge, for the user


def compact(
    storage: Storage,
    *,
    date: str = "",
    hour: int | None = None,
    max_rows: int = MAX_ROWS,
    compression: str = "zstd",
    row_group_rows: int = 16_384,
    tables: Iterable[str] = TABLES,
    say: Callable[[str], None] = lambda line: None,
) -> Compacted:
    """Merge the small files of each folder (of ``date``/``hour`` when given) and partition."""
    done = Compacted()
    for table in tables:
        problems: list[str] = []
        files = read_footers(storage, table, problems)
        for fs in by_partition(files).values():
            kept = _drop_leftovers(storage, fs, done, say)
            for run in _runs(kept, date, hour, max_rows):
                _merge(storage, run, compression, row_group_rows, done, say)
    return done


def _in_scope(f: Stored, date: str, hour: int | None) -> bool:
    m = FOLDER.match(f.path)
    assert m is not None
    return (not date or m["date"] == date) and (hour is None or int(m["hour"]) == hour)


def _drop_leftovers(
    storage: Storage, fs: list[Stored], done: Compacted, say: Callable[[str], None]
) -> list[Stored]:
    """Delete the files an interrupted compact left inside a merged file; the others."""
    kept: list[Stored] = []
    for f in fs:
        if kept and _inside(f, kept[-1]):
            storage.fs.delete_file(storage.full(f.path))
            done.leftovers += 1
            say(f"removed {f.path}: its rows are in {kept[-1].path} (an interrupted compact)")
            continue
        kept.append(f)
    return kept


def _runs(fs: list[Stored], date: str, hour: int | None, max_rows: int) -> list[list[Stored]]:
    """Runs of two or more files to merge: neighbours in the partition's offset order, in one
    folder, contiguous, of one schema, ``max_rows`` at most together."""
    runs: list[list[Stored]] = []
    run: list[Stored] = []
    for f in fs:
        prev = run[-1] if run else None
        if (
            prev is not None
            and f.folder == prev.folder
            and f.first == prev.last + 1
            and f.meta.get("schema") == prev.meta.get("schema")
            and sum(r.rows for r in run) + f.rows <= max_rows
        ):
            run.append(f)
            continue
        if len(run) > 1:
            runs.append(run)
        run = [f] if _in_scope(f, date, hour) and f.rows < max_rows else []
    if len(run) > 1:
        runs.append(run)
    return runs


def _merge(
    storage: Storage,
    run: list[Stored],
    compression: str,
    row_group_rows: int,
    done: Compacted,
    say: Callable[[str], None],
) -> None:
    """Write ``run`` as one file over its first file's name, check it, delete the others."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schemas = []
    for f in run:
        with storage.fs.open_input_file(storage.full(f.path)) as src:
            schemas.append(pq.read_schema(src).remove_metadata())
    if any(not s.equals(schemas[0]) for s in schemas[1:]):
        return  # an Arrow type differs (e.g. an embedding's width): left as they are
    rows = sum(f.rows for f in run)
    meta = {
        **run[0].meta,
        "first_offset": str(run[0].first),
        "last_offset": str(run[-1].last),
        "rows": str(rows),
        "compacted": str(len(run)),
    }
    schema = schemas[0].with_metadata({f"{META}{k}": v for k, v in meta.items()})

    def write(out: Any) -> None:
        with pq.ParquetWriter(out, schema, compression=compression) as w:
            pending: list[pa.RecordBatch] = []
            held = 0
            for f in run:
                with storage.fs.open_input_file(storage.full(f.path)) as src:
                    for batch in pq.ParquetFile(src).iter_batches(batch_size=row_group_rows):
                        pending.append(batch)
                        held += batch.num_rows
                        if held >= row_group_rows:
                            w.write_table(pa.Table.from_batches(pending, schema), row_group_rows)
                            pending, held = [], 0
            if pending:
                w.write_table(pa.Table.from_batches(pending, schema), row_group_rows)

    storage.publish(run[0].path, write)
    with storage.fs.open_input_file(storage.full(run[0].path)) as check:
        if pq.read_metadata(check).num_rows != rows:  # never delete rows not in place
            raise StoreError(f"compact: {run[0].path} does not read back with {rows} rows")
    for f in run[1:]:
        storage.fs.delete_file(storage.full(f.path))
    done.merged += 1
    done.replaced += len(run)
    done.rows += rows
    line = f"merged {len(run)} files ({rows} rows, offsets {run[0].first}-{run[-1].last})"
    done.done.append(f"{line} into {run[0].path}")
    say(done.done[-1])
