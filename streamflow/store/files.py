"""Where stored files live and how one becomes visible: whole, or not at all.

A local folder: the file is written under a hidden temporary name in its final folder, flushed
and fsynced, renamed over its final name (atomic on POSIX), and the folder fsynced. S3 (``s3://
bucket/prefix``, through ``pyarrow.fs.S3FileSystem``): an object is visible only once its PUT
(or multipart upload) completes, so the file is written to its final key directly. Either way
a reader listing ``*.parquet`` never sees half a file.
"""

from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from streamflow.errors import ConfigError, InfrastructureError

TABLES = ("results", "dead_letters")
OFFSET_DIGITS = 19
NAME = re.compile(r"^(?P<topic>.+)\+(?P<partition>\d+)\+(?P<first>\d+)\.parquet$")
TEMP_PREFIX = "."  # a file being written: hidden, and not *.parquet (``.<name>.<uuid>.tmp``)
META = "streamflow."  # the prefix of a stored file's key-value metadata


class StoreError(InfrastructureError):
    """The store could not be written or read (a full disk, an S3 error): retried with backoff;
    nothing is committed meanwhile."""


def file_name(topic: str, partition: int, first_offset: int) -> str:
    return f"{topic}+{partition}+{first_offset:0{OFFSET_DIGITS}d}.parquet"


def parse_name(name: str) -> tuple[str, int, int] | None:
    """(topic, partition, first offset) of a stored file's name, or None for another file."""
    m = NAME.match(name.rsplit("/", 1)[-1])
    return (m["topic"], int(m["partition"]), int(m["first"])) if m else None


def hour_folder(ms: int) -> str:
    """``date=YYYY-MM-DD/hour=HH`` of an epoch-ms time, UTC."""
    t = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return f"date={t:%Y-%m-%d}/hour={t:%H}"


@dataclass(frozen=True)
class FileRange:
    """One stored file: its path under the store, and the offsets it holds."""

    path: str  # relative: <table>/date=.../hour=.../<name>
    topic: str
    partition: int
    first_offset: int
    last_offset: int
    rows: int


class Storage:
    """A store location: a local folder or an S3 prefix."""

    def __init__(self, uri: str, **s3: Any) -> None:
        if not uri:
            raise ConfigError(
                "store.path: where the store writes (a folder, or s3://bucket/prefix)"
            )
        self.uri = uri.rstrip("/")
        self.s3 = uri.startswith("s3://")
        if self.s3:
            from pyarrow import fs

            opts = {k: v for k, v in s3.items() if v}
            self.fs = fs.S3FileSystem(**opts)
            self.base = self.uri[len("s3://") :]
        else:
            from pyarrow import fs

            self.fs = fs.LocalFileSystem()
            self.base = os.path.abspath(uri)

    def full(self, rel: str) -> str:
        return f"{self.base}/{rel}" if rel else self.base

    def publish(self, rel: str, write: Any) -> int:
        """Make ``rel`` visible whole: ``write(file object)`` writes it. Returns its size in
        bytes. Raises StoreError (nothing visible) when the store refuses it."""
        final = self.full(rel)
        folder, name = final.rsplit("/", 1)
        try:
            if self.s3:
                with self.fs.open_output_stream(final) as out:  # visible once the upload completes
                    write(out)
                return int(self.fs.get_file_info(final).size)
            os.makedirs(folder, exist_ok=True)
            tmp = f"{folder}/{TEMP_PREFIX}{name}.{uuid.uuid4().hex[:12]}.tmp"
            try:
                with open(tmp, "wb") as f:
                    write(f)
                    f.flush()
                    os.fsync(f.fileno())
                size = os.path.getsize(tmp)
                os.replace(tmp, final)
            except BaseException:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise
            fd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(fd)  # the rename itself survives a crash
            finally:
                os.close(fd)
            return size
        except StoreError:
            raise
        except (OSError, Exception) as exc:
            raise StoreError(f"store: cannot write {final}: {exc}") from exc

    def files(self, table: str) -> list[str]:
        """Every published file of ``table`` (relative paths), sorted."""
        from pyarrow import fs

        root = self.full(table)
        try:
            infos = self.fs.get_file_info(
                fs.FileSelector(root, recursive=True, allow_not_found=True)
            )
        except Exception as exc:
            raise StoreError(f"store: cannot list {root}: {exc}") from exc
        prefix = self.base + "/"
        out = [
            i.path[len(prefix) :] if i.path.startswith(prefix) else i.path
            for i in infos
            if i.type == fs.FileType.File and parse_name(i.path) is not None
        ]
        return sorted(out)

    def temp_files(self, table: str) -> list[str]:
        """Files left half-written by a writer that died (local stores only)."""
        from pyarrow import fs

        if self.s3:
            return []
        infos = self.fs.get_file_info(
            fs.FileSelector(self.full(table), recursive=True, allow_not_found=True)
        )
        return [
            i.path
            for i in infos
            if i.type == fs.FileType.File and i.base_name.startswith(TEMP_PREFIX)
        ]

    def metadata(self, rel: str) -> dict[str, str]:
        """A stored file's ``streamflow.*`` key-value metadata (its footer only)."""
        import pyarrow.parquet as pq

        try:
            with self.fs.open_input_file(self.full(rel)) as f:
                meta = pq.read_metadata(f).metadata or {}
        except Exception as exc:
            raise StoreError(f"store: cannot read {self.full(rel)}: {exc}") from exc
        return {
            k.decode()[len(META) :]: v.decode()
            for k, v in meta.items()
            if k.decode().startswith(META)
        }

    def ranges(self, table: str) -> list[FileRange]:
        """Every file of ``table`` with its offsets (read from its footer)."""
        out = []
        for rel in self.files(table):
            m = self.metadata(rel)
            topic, partition, first = parse_name(rel) or ("", -1, -1)
            out.append(
                FileRange(
                    rel,
                    topic,
                    partition,
                    int(m.get("first_offset", first)),
                    int(m.get("last_offset", -1)),
                    int(m.get("rows", 0)),
                )
            )
        return out

    def high_water(self, table: str, topic: str, partition: int) -> int:
        """The last offset of ``topic[partition]`` stored in ``table`` (-1: none): read from the
        footer of the file with the highest first offset."""
        best: tuple[int, str] | None = None
        for rel in self.files(table):
            parsed = parse_name(rel)
            mine = parsed is not None and parsed[:2] == (topic, partition)
            if parsed is not None and mine and (best is None or parsed[2] > best[0]):
                best = (parsed[2], rel)
        if best is None:
            return -1
        return int(self.metadata(best[1]).get("last_offset", best[0]))


def storage_for(settings: Any) -> Storage:
    """The pipeline's store (``[store]``): the path, and S3's endpoint, region and credentials
    (else the AWS_* environment, as pyarrow reads it)."""
    st = settings.store
    return Storage(
        st.path,
        endpoint_override=st.s3_endpoint,
        region=st.s3_region,
        access_key=st.s3_access_key_id,
        secret_key=st.s3_secret_access_key.reveal(),
        scheme="http" if st.s3_endpoint.startswith("http://") else "",
    )
