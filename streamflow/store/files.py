"""Where stored files live and how one becomes visible: whole, or not at all.

A local folder: the file is written under a hidden temporary name in its final folder, flushed
and fsynced, renamed over its final name (atomic on POSIX), and the folder fsynced. S3 (``s3://
bucket/prefix``, through ``pyarrow.fs.S3FileSystem``): an object is visible only once its upload
completes, so the file is serialized in memory first and then uploaded to its final key in one
write; a failure before or during the upload leaves no object (see ``Storage.publish``). Either
way a reader listing ``*.parquet`` never sees half a file.

S3 requests are bounded (``S3Options``: connect and request timeouts, few SDK attempts), so an
endpoint that does not answer fails in seconds with a ``StoreError`` naming it; the store step
retries that with its own backoff. The secret key reaches the S3 client only, never a message.
"""

from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from streamflow.errors import ConfigError, InfrastructureError
from streamflow.settings.schema import Secret

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


@dataclass(frozen=True)
class S3Options:
    """How to reach an S3 store: ``[store]``'s s3_* keys, and bounds on every request.

    No access key: the AWS chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, the shared
    config files, the instance's role), as pyarrow reads it. The timeouts and attempts bound one
    call: an endpoint that refuses fails in about a second, one that accepts and never answers
    in ``attempts * request_timeout_s``; the store step then waits and tries again."""

    endpoint: str = ""  # http(s)://host:port of an S3-compatible server; empty: AWS
    region: str = ""
    access_key_id: str = ""
    secret_access_key: Secret = field(default_factory=Secret)
    connect_timeout_s: float = 2.0
    request_timeout_s: float = 5.0  # curl's low-speed limit: no byte for this long fails
    attempts: int = 2  # the AWS SDK's own tries of one request (throttling, a reset)

    def describe(self) -> str:
        """Where requests go, for messages: the endpoint, else AWS and its region."""
        if self.endpoint:
            return self.endpoint
        return f"AWS S3 ({self.region})" if self.region else "AWS S3"


def _endpoint(url: str) -> tuple[str, str]:
    """(host:port, scheme) of an ``http(s)://host:port`` endpoint, as pyarrow takes them."""
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        raise ConfigError(
            "store.s3_endpoint: carries credentials; give them as store.s3_access_key_id and "
            "store.s3_secret_access_key"
        )
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path.strip("/"):
        raise ConfigError(
            f"store.s3_endpoint: {url!r} is not http://host:port or https://host:port"
        )
    return parts.netloc, parts.scheme


def _s3_filesystem(o: S3Options) -> Any:
    from pyarrow import fs

    if bool(o.access_key_id) != bool(o.secret_access_key):
        raise ConfigError(
            "store.s3_access_key_id and store.s3_secret_access_key: give both (the secret "
            "best as STREAMFLOW_STORE_S3_SECRET_ACCESS_KEY), or neither for the AWS chain"
        )
    opts: dict[str, Any] = {
        "region": o.region or None,
        "connect_timeout": o.connect_timeout_s,
        "request_timeout": o.request_timeout_s,
        "retry_strategy": fs.AwsStandardS3RetryStrategy(max_attempts=o.attempts),
        "background_writes": True,  # part errors surface at close, which then completes nothing
    }
    if o.endpoint:
        opts["endpoint_override"], opts["scheme"] = _endpoint(o.endpoint)
    if o.access_key_id:
        opts["access_key"] = o.access_key_id
        opts["secret_key"] = o.secret_access_key.reveal()
    return fs.S3FileSystem(**opts)


class Storage:
    """A store location: a local folder or an S3 prefix."""

    def __init__(self, uri: str, s3: S3Options | None = None) -> None:
        if not uri:
            raise ConfigError(
                "store.path: where the store writes (a folder, or s3://bucket/prefix)"
            )
        self.uri = uri.rstrip("/")
        self.s3 = uri.startswith("s3://")
        self.s3_options = s3 or S3Options()
        if self.s3:
            self.base = self.uri[len("s3://") :]
            if not self.base or self.base.startswith("/"):
                raise ConfigError(f"store.path: {uri!r} names no bucket (s3://bucket/prefix)")
            self.fs = _s3_filesystem(self.s3_options)
        else:
            from pyarrow import fs

            self.fs = fs.LocalFileSystem()
            self.base = os.path.abspath(uri)

    def __repr__(self) -> str:
        return f"Storage({self.where(self.base)!r})"

    def full(self, rel: str) -> str:
        return f"{self.base}/{rel}" if rel else self.base

    def where(self, path: str) -> str:
        """A full path as a user would name it: ``s3://bucket/key at <endpoint>``, or the path."""
        return f"s3://{path} at {self.s3_options.describe()}" if self.s3 else path

    def _error(self, doing: str, path: str, exc: BaseException) -> StoreError:
        """A StoreError naming the place; the secret masked should a message ever echo it."""
        text = str(exc)
        secret = self.s3_options.secret_access_key.reveal()
        if len(secret) >= 8:  # a shorter one would mask words that merely contain it
            text = text.replace(secret, "********")
        return StoreError(f"store: cannot {doing} {self.where(path)}: {text}")

    def check(self) -> None:
        """Reach the store once (S3: the bucket exists and answers; local: the folder can be
        made), so a wrong or unreachable store is named at start-up. Raises StoreError."""
        from pyarrow import fs

        try:
            if self.s3:
                bucket = self.base.split("/", 1)[0]
                if self.fs.get_file_info(bucket).type == fs.FileType.NotFound:
                    raise FileNotFoundError(f"bucket {bucket!r} does not exist")
            else:
                os.makedirs(self.base, exist_ok=True)
        except Exception as exc:
            raise self._error("reach", self.base, exc) from exc

    def publish(self, rel: str, write: Any) -> int:
        """Make ``rel`` visible whole: ``write(file object)`` writes it. Returns its size in
        bytes. Raises StoreError (nothing visible) when the store refuses it.

        S3: ``write`` fills an in-memory buffer, and only a complete buffer is handed to the
        upload, in one write. pyarrow completes a multipart upload when its stream is closed,
        whoever closes it (a ``with`` block unwinding an exception, the destructor), so a
        stream that ``write`` had written half of would publish that half. Handed whole, the
        upload's close either completes with every byte or (a part refused, the endpoint gone)
        fails before ``CompleteMultipartUpload``: no object. The stored size is checked after."""
        final = self.full(rel)
        folder, name = final.rsplit("/", 1)
        try:
            if self.s3:
                import pyarrow as pa

                buf = pa.BufferOutputStream()
                write(buf)  # raising here leaves the store untouched
                data = buf.getvalue()
                with self.fs.open_output_stream(final) as out:
                    out.write(data)
                stored = int(self.fs.get_file_info(final).size)
                if stored != data.size:
                    raise OSError(f"stored {stored} bytes of {data.size}")
                return int(data.size)
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
        except Exception as exc:
            raise self._error("write", final, exc) from exc

    def files(self, table: str) -> list[str]:
        """Every published file of ``table`` (relative paths), sorted."""
        from pyarrow import fs

        root = self.full(table)
        try:
            infos = self.fs.get_file_info(
                fs.FileSelector(root, recursive=True, allow_not_found=True)
            )
        except Exception as exc:
            raise self._error("list", root, exc) from exc
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
            raise self._error("read", self.full(rel), exc) from exc
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
    (else the AWS chain, as pyarrow reads it)."""
    st = settings.store
    return Storage(
        st.path,
        S3Options(
            endpoint=st.s3_endpoint,
            region=st.s3_region,
            access_key_id=st.s3_access_key_id,
            secret_access_key=st.s3_secret_access_key,
        ),
    )
