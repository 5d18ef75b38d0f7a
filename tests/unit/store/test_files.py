"""Where stored files live, on a local folder and on S3 (moto's server on loopback, the stand-in
for S3: ``tests/s3server.py``): a file is visible whole or not at all, names parse, listing sees
published files only, the high-water mark is read from the newest file's footer, and a store
that cannot be reached or written says so in seconds, naming the place, never the secret."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from streamflow.errors import ConfigError
from streamflow.settings.loading import load_settings
from streamflow.settings.schema import Secret
from streamflow.store.files import (
    S3Options,
    Storage,
    StoreError,
    file_name,
    parse_name,
    storage_for,
)
from tests.conftest import PIPELINE

if TYPE_CHECKING:
    from tests.s3server import S3Server

pytest_plugins = ["tests.s3server"]  # the s3_server fixture (imported by pytest, for its rewrite)
TOPIC = "telemetry.scored"


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "local":
        return Storage(str(tmp_path / "store"))
    server: S3Server = request.getfixturevalue("s3_server")
    return server.storage()


def everything(storage: Storage, request: pytest.FixtureRequest) -> list[str]:
    """Every file or object under the store, hidden and temporary ones included."""
    if storage.s3:
        server: S3Server = request.getfixturevalue("s3_server")
        return server.keys(storage.uri)
    return sorted(str(p) for p in Path(storage.base).rglob("*") if p.is_file())


def parquet(first: int, last: int, partition: int = 0) -> Callable[[Any], None]:
    """A writer of a small stored file holding offsets first..last, with its footer's keys."""
    offsets = list(range(first, last + 1))
    meta = {"topic": TOPIC, "partition": str(partition), "first_offset": str(first),
            "last_offset": str(last), "rows": str(len(offsets))}  # fmt: skip
    table = pa.table({"kafka_offset": offsets}).replace_schema_metadata(
        {f"streamflow.{k}": v for k, v in meta.items()}
    )
    return lambda f: pq.write_table(table, f)


def rel(first: int, partition: int = 0, topic: str = TOPIC) -> str:
    return f"results/date=2026-12-01/hour=10/{file_name(topic, partition, first)}"


def test_names_sort_as_offsets_and_parse_back() -> None:
    names = [file_name(TOPIC, 3, o) for o in (10, 9, 100_000_000_000)]
    assert names[0] == "telemetry.scored+3+0000000000000000010.parquet"
    assert sorted(names) == [names[1], names[0], names[2]]
    assert parse_name(f"results/date=2026-12-01/hour=10/{names[2]}") == (TOPIC, 3, 100_000_000_000)
    assert parse_name(f".{names[0]}.0123456789ab.tmp") is None
    assert parse_name("results/_SUCCESS") is None


def test_a_published_file_is_listed_and_read_back(storage: Storage) -> None:
    size = storage.publish(rel(0, partition=2), parquet(0, 9, partition=2))
    assert size > 0
    assert storage.files("results") == [rel(0, partition=2)]
    (r,) = storage.ranges("results")
    assert (r.topic, r.partition, r.first_offset, r.last_offset, r.rows) == (TOPIC, 2, 0, 9, 10)
    assert storage.metadata(r.path)["rows"] == "10"
    with storage.fs.open_input_file(storage.full(r.path)) as f:
        assert pq.read_table(f)["kafka_offset"].to_pylist() == list(range(10))


@pytest.mark.parametrize("written", [1_000, 12 * 1024 * 1024])  # 12 MiB: over one S3 part
def test_a_write_that_fails_midway_leaves_nothing_visible(
    storage: Storage, request: pytest.FixtureRequest, written: int
) -> None:
    def half(f: Any) -> None:
        f.write(b"PAR1" + b"x" * written)
        raise RuntimeError("disk pulled out midway")

    with pytest.raises(StoreError, match="disk pulled out midway") as err:
        storage.publish(rel(0), half)
    assert storage.where(storage.full(rel(0))) in str(err.value)
    assert storage.files("results") == []
    assert everything(storage, request) == []  # locally no temporary file either
    if storage.s3:  # not even an upload begun, to be completed by whoever closes its stream
        server: S3Server = request.getfixturevalue("s3_server")
        assert server.pending_uploads(storage.uri) == []
    storage.publish(rel(0), parquet(0, 4))  # and the retry lands whole
    assert storage.ranges("results")[0].rows == 5


def test_a_full_disk_is_a_store_error_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path / "store"))

    def full(f: Any) -> None:
        f.write(b"PAR1")
        raise OSError(28, "No space left on device")

    with pytest.raises(StoreError, match="No space left on device"):
        storage.publish(rel(0), full)
    assert [p for p in (tmp_path / "store").rglob("*") if p.is_file()] == []


def test_the_high_water_mark_is_the_newest_files_last_offset(storage: Storage) -> None:
    assert storage.high_water("results", TOPIC, 0) == -1
    storage.publish(rel(0), parquet(0, 99))
    storage.publish(rel(100), parquet(100, 149))
    storage.publish(rel(0, partition=1), parquet(0, 999, partition=1))
    storage.publish(rel(500, topic="other.scored"), parquet(500, 599))
    assert storage.high_water("results", TOPIC, 0) == 149
    assert storage.high_water("results", TOPIC, 1) == 999
    assert storage.high_water("results", TOPIC, 2) == -1
    assert storage.high_water("dead_letters", TOPIC, 0) == -1


def test_listing_sees_published_files_only(storage: Storage) -> None:
    storage.publish(rel(0), parquet(0, 1))
    folder = storage.full(rel(0)).rsplit("/", 1)[0]
    for stray in (f".{file_name(TOPIC, 0, 2)}.0123456789ab.tmp", "_SUCCESS", "notes.txt"):
        with storage.fs.open_output_stream(f"{folder}/{stray}") as f:
            f.write(b"not a stored file")
    assert storage.files("results") == [rel(0)]
    assert storage.high_water("results", TOPIC, 0) == 1


def test_a_file_where_the_folder_should_be_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("a file, not a folder")
    storage = Storage(str(tmp_path / "blocker" / "store"))
    with pytest.raises(StoreError, match=r"cannot write .*blocker/store/results"):
        storage.publish(rel(0), parquet(0, 1))
    with pytest.raises(StoreError, match="blocker/store"):
        storage.check()


@pytest.fixture()
def silent_port() -> Iterator[int]:
    """A loopback port that accepts connections and never answers (a hung endpoint)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield listener.getsockname()[1]
    stop.set()
    t.join()
    for c in held:
        c.close()
    listener.close()


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


def secret_options(endpoint: str, **bounds: Any) -> S3Options:
    return S3Options(endpoint=endpoint, region="us-east-1", access_key_id="key-id",
                     secret_access_key=Secret("s3cr3t-never-shown"), **bounds)  # fmt: skip


def store_calls(storage: Storage) -> list[Callable[[], object]]:
    return [
        storage.check,
        lambda: storage.files("results"),
        lambda: storage.high_water("results", TOPIC, 0),
        lambda: storage.publish(rel(0), parquet(0, 1)),
    ]


def test_an_endpoint_that_refuses_fails_in_seconds_naming_it() -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    storage = Storage("s3://bucket/prefix", secret_options(endpoint))  # the default bounds
    for call in store_calls(storage):
        started = time.monotonic()
        with pytest.raises(StoreError) as err:
            call()
        assert time.monotonic() - started < 5
        assert "s3://bucket/prefix" in str(err.value) and f"at {endpoint}" in str(err.value)
        assert "s3cr3t" not in str(err.value)


def test_an_endpoint_that_never_answers_fails_within_its_request_timeout(
    silent_port: int,
) -> None:
    endpoint = f"http://127.0.0.1:{silent_port}"
    storage = Storage("s3://bucket/prefix", secret_options(endpoint, request_timeout_s=1.0))
    for call in store_calls(storage)[1::2]:  # a listing and an upload: 2 s each at most
        started = time.monotonic()
        with pytest.raises(StoreError, match=f"at {endpoint}") as err:
            call()
        assert time.monotonic() - started < 2 * 1.0 + 2  # two attempts, and a little
        assert "s3cr3t" not in str(err.value)


def test_a_missing_bucket_is_named(s3_server: S3Server) -> None:
    storage = Storage("s3://no-such-bucket/prefix", s3_server.options())
    with pytest.raises(StoreError, match="no-such-bucket.*does not exist"):
        storage.check()
    with pytest.raises(StoreError, match="s3://no-such-bucket/prefix/results"):
        storage.publish(rel(0), parquet(0, 1))
    s3_server.storage().check()


def test_credentials_from_the_aws_environment(
    s3_server: S3Server,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_access_key)
    storage = Storage(
        s3_server.prefix(), S3Options(endpoint=s3_server.endpoint, region="us-east-1")
    )
    storage.publish(rel(0), parquet(0, 2))
    assert storage.high_water("results", TOPIC, 0) == 2


def test_the_settings_reach_s3_with_the_secret_from_the_environment(
    s3_server: S3Server,
) -> None:
    uri = s3_server.prefix()
    settings = load_settings(
        PIPELINE,
        {
            "store.path": uri,
            "store.s3_endpoint": s3_server.endpoint,
            "store.s3_region": s3_server.region,
            "store.s3_access_key_id": s3_server.access_key_id,
        },
        environ={"STREAMFLOW_STORE_S3_SECRET_ACCESS_KEY": s3_server.secret_access_key},
    )
    storage = storage_for(settings)
    storage.publish(rel(7), parquet(7, 8))
    assert s3_server.keys(uri) == [f"{uri.split('/', 3)[3]}/{rel(7)}"]
    for shown in (repr(storage), repr(storage.s3_options), repr(settings.store)):
        assert s3_server.secret_access_key not in shown


def test_an_error_that_would_echo_the_secret_shows_it_masked(s3_server: S3Server) -> None:
    storage = s3_server.storage()

    def leaky(f: Any) -> None:
        raise RuntimeError(f"signed with {s3_server.secret_access_key}")

    with pytest.raises(StoreError, match=r"signed with \*{8}") as err:
        storage.publish(rel(0), leaky)
    assert s3_server.secret_access_key not in str(err.value)


@pytest.mark.parametrize(
    ("uri", "options", "wrong"),
    [
        ("s3://", S3Options(), "names no bucket"),
        ("s3://b/p", S3Options(endpoint="127.0.0.1:9000"), "is not http://host:port"),
        ("s3://b/p", S3Options(endpoint="http://u:pw@h:1"), "carries credentials"),
        ("s3://b/p", S3Options(access_key_id="k"), "give both"),
        ("s3://b/p", S3Options(secret_access_key=Secret("x")), "give both"),
        ("", S3Options(), "store.path"),
    ],
)
def test_a_wrong_s3_setting_is_a_config_error(uri: str, options: S3Options, wrong: str) -> None:
    with pytest.raises(ConfigError, match=wrong) as err:
        Storage(uri, options)
    assert "pw" not in str(err.value)
