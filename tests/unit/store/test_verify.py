"""``streamflow store verify`` and ``compact`` on stores in the store step's layout: gaps,
overlaps, mislabelled and half-written files reported; small files merged with every view's
answer unchanged, an interrupted compact repaired."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from streamflow.cli import main
from streamflow.settings import Settings
from streamflow.settings.schema import Secret
from streamflow.store.files import Storage, file_name
from streamflow.store.query import open_store
from streamflow.store.verify import compact, verify
from tests.s3server import S3Server
from tests.unit.store.conftest import H7, H8, SCORED, dead_letter, publish, result, settings_for

pytest_plugins = ["tests.s3server"]  # the s3_server fixture


def answers(store: Path | Settings) -> dict[str, Any]:
    """What a reader sees: every view's rows, sorted."""
    q = open_store(settings_for(store) if isinstance(store, Path) else store)
    try:
        return {
            view: sorted(
                q.query(f"SELECT * EXCLUDE (key, value) FROM {view}").fetchall()
                if view == "dead_letters"
                else q.query(f"SELECT * FROM {view}").fetchall(),
                key=repr,
            )
            for view in ("results", "results_all", "dead_letters")
        }
    finally:
        q.close()


def parquet_files(store: Path) -> list[str]:
    return sorted(str(p.relative_to(store)) for p in store.rglob("*.parquet"))


def small_files(store: Path | Storage) -> Storage:
    """Partition 0: six files of 3 rows in hour 7 (offsets 0-17), then hour 8 (18-20), then
    hour 7 again (21-26: two files); partition 1: one file. Dead letters: three files."""
    storage = Storage(str(store)) if isinstance(store, Path) else store
    for k in range(6):
        publish(storage, H7, [result(3 * k + i, 0.2 * i) for i in range(3)], 3 * k)
    publish(storage, H8, [result(100 + i, 0.7, H8) for i in range(3)], 18)
    publish(storage, H7, [result(200 + i, 0.1) for i in range(3)], 21)
    publish(storage, H7, [result(203 + i, 0.9) for i in range(3)], 24)
    publish(storage, H7, [result(500, 0.1, source_partition=1)], 0, partition=1)
    for k in range(3):
        publish(storage, H7, [dead_letter(k)], k, table="dead_letters", topic="telemetry.dlq")
    return storage


def test_a_clean_store_verifies(store: Path) -> None:
    report = verify(Storage(str(store)))
    assert report.errors == []
    assert (report.files, report.partitions) == (5, 3)
    assert not any("starts at offset" in line for line in report.infos)


def test_a_partition_starting_later_is_told_not_an_error(tmp_path: Path) -> None:
    publish(Storage(str(tmp_path)), H7, [result(1, 0.1)], 40)
    report = verify(Storage(str(tmp_path)))
    assert report.errors == []
    assert report.infos == [
        f"results {SCORED}[0]: starts at offset 40 (the store began later, or the topic's "
        "retention removed the earlier offsets)"
    ]


def test_a_gap_and_an_overlap_are_errors(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    publish(storage, H7, [result(i, 0.1) for i in range(5)], 0)  # 0-4
    publish(storage, H7, [result(i, 0.1) for i in range(3)], 8)  # 8-10: 5-7 missing
    publish(storage, H8, [result(i, 0.1, H8) for i in range(3)], 10)  # 10-12: 10 twice
    report = verify(storage)
    assert report.errors == [
        f"results {SCORED}[0]: gap: offsets 5-7 (3) are in no file, between "
        f"results/{H7}/{file_name(SCORED, 0, 0)} and results/{H7}/{file_name(SCORED, 0, 8)}",
        f"results {SCORED}[0]: overlap: offsets 10-10 are in "
        f"results/{H7}/{file_name(SCORED, 0, 8)} and results/{H8}/{file_name(SCORED, 0, 10)}",
    ]


def test_a_gap_of_results_the_store_dead_lettered_is_explained(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    publish(storage, H7, [result(i, 0.1) for i in range(5)], 0)
    publish(storage, H7, [result(i, 0.1) for i in range(3)], 6)  # 5: did not decode
    publish(storage, H7, [dead_letter(5, "store", SCORED)], 0, table="dead_letters", topic="dlq")
    report = verify(storage)
    assert report.errors == []
    assert f"results {SCORED}[0]: offsets 5-5 are dead letters of the store step" in (
        " ".join(report.infos)
    )


def test_a_file_whose_name_and_metadata_disagree_is_an_error(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    rel = publish(storage, H7, [result(i, 0.1) for i in range(3)], 0)
    os.rename(
        tmp_path / rel, tmp_path / rel.replace("+0000000000000000000.", "+0000000000000000001.")
    )
    report = verify(storage)
    assert any(
        "name and metadata disagree: first_offset 0 (name: 1)" in line for line in report.errors
    )


def test_half_written_files_are_listed(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    publish(storage, H7, [result(i, 0.1) for i in range(3)], 0)
    folder = tmp_path / "results" / H7
    old = folder / f".{file_name(SCORED, 0, 3)}.0123456789ab.tmp"
    old.write_bytes(b"PAR1 half")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    (folder / f".{file_name(SCORED, 0, 6)}.ba9876543210.tmp").write_bytes(b"PAR1")
    report = verify(storage)
    assert [line.split(":")[0] for line in report.errors] == [str(old)]
    assert "left by a writer that died" in report.errors[0]
    assert any("being written now" in line for line in report.infos)


def test_compact_merges_contiguous_files_and_every_view_answers_the_same(tmp_path: Path) -> None:
    storage = small_files(tmp_path)
    before, files_before = answers(tmp_path), parquet_files(tmp_path)
    done = compact(storage)
    after = parquet_files(tmp_path)
    assert answers(tmp_path) == before
    assert len(files_before) == 13 and after == [
        f"dead_letters/{H7}/{file_name('telemetry.dlq', 0, 0)}",
        f"results/{H7}/{file_name(SCORED, 0, 0)}",  # offsets 0-17: six files
        f"results/{H7}/{file_name(SCORED, 0, 21)}",  # 21-26: not with 0-17 (hour 8 between)
        f"results/{H7}/{file_name(SCORED, 1, 0)}",
        f"results/{H8}/{file_name(SCORED, 0, 18)}",
    ]
    assert (done.merged, done.replaced, done.rows) == (3, 11, 18 + 6 + 3)
    meta = pq.read_metadata(tmp_path / after[1]).metadata
    assert meta[b"streamflow.first_offset"] == b"0" and meta[b"streamflow.last_offset"] == b"17"
    assert meta[b"streamflow.rows"] == b"18" and meta[b"streamflow.compacted"] == b"6"
    assert verify(storage).errors == []
    assert compact(storage).merged == 0  # nothing left to merge


def test_compact_keeps_to_its_date_hour_and_max_rows(tmp_path: Path) -> None:
    storage = small_files(tmp_path)
    assert compact(storage, hour=8).merged == 0
    assert compact(storage, date="2026-11-30").merged == 0
    done = compact(storage, date="2026-12-01", hour=7, max_rows=7, tables=["results"])
    assert done.merged == 4 and done.replaced == 8  # 0-5, 6-11, 12-17, 21-26
    assert verify(storage).errors == []


def test_an_interrupted_compact_is_reported_and_repaired(tmp_path: Path) -> None:
    storage = small_files(tmp_path)
    before = answers(tmp_path)
    real_delete = storage.fs.delete_file
    calls = {"n": 0}

    def crash_after_one(path: str) -> None:
        calls["n"] += 1
        if calls["n"] > 1:
            raise KeyboardInterrupt  # the process dies between the rename and the deletes
        real_delete(path)

    storage.fs = _Patched(storage.fs, delete_file=crash_after_one)
    with pytest.raises(KeyboardInterrupt):
        compact(storage, tables=["results"])
    storage.fs = storage.fs.inner
    mid = answers(tmp_path)
    assert mid["results"] == before["results"]  # the copies are removed by source record
    assert len(mid["results_all"]) == len(before["results_all"]) + 4 * 3  # 4 files left twice
    report = verify(storage)
    assert len(report.errors) == 4
    assert all("left by an interrupted compact" in line for line in report.errors)
    done = compact(storage)
    assert done.leftovers == 4
    assert answers(tmp_path) == before and verify(storage).errors == []


class _Patched:
    """A filesystem with one method replaced."""

    def __init__(self, inner: Any, **methods: Any) -> None:
        self.inner, self.methods = inner, methods

    def __getattr__(self, name: str) -> Any:
        return self.methods.get(name) or getattr(self.inner, name)


def test_the_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    small_files(tmp_path)
    at = f"store.path={tmp_path}"
    assert main(["store", "verify", "--set", at]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"verify {tmp_path}: ok (13 files, 3 partitions: no gap, no overlap, nothing half-written)"
    )
    assert main(["store", "compact", "--set", at, "--date", "2026-12-01", "--hour", "7"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == "compact: 3 merged files written (27 rows) in place of 11 files"
    os.unlink(tmp_path / "results" / H8 / file_name(SCORED, 0, 18))
    assert main(["store", "verify", "--set", at]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[-2].startswith(f"error: results {SCORED}[0]: gap: offsets 18-20 (3)")
    assert out[-1] == f"verify {tmp_path}: 1 problem(s) in 4 files, 3 partitions"
    assert main(["store", "verify", "--set", f"store.path={tmp_path}/none"]) == 1
    err = capsys.readouterr().err
    assert err == (
        f"streamflow: error: store.path: {tmp_path}/none: not a folder (nothing stored there)\n"
    )


def test_compact_and_verify_on_s3(s3_server: S3Server, capsys: pytest.CaptureFixture[str]) -> None:
    uri = s3_server.prefix()
    storage = small_files(s3_server.storage(uri))
    settings = settings_for(
        uri,
        s3_endpoint=s3_server.endpoint,
        s3_region=s3_server.region,
        s3_access_key_id=s3_server.access_key_id,
        s3_secret_access_key=Secret(s3_server.secret_access_key),
    )
    before = answers(settings)
    assert verify(storage).errors == []
    assert compact(storage).merged == 3
    assert answers(settings) == before
    stored = [k for k in s3_server.keys(uri) if k.endswith(".parquet")]
    assert len(stored) == 5 and verify(storage).errors == []
    keys = ["--set", f"store.s3_endpoint={s3_server.endpoint}", "--set",
            f"store.s3_access_key_id={s3_server.access_key_id}", "--set",
            f"store.s3_secret_access_key={s3_server.secret_access_key}"]  # fmt: skip
    assert main(["store", "verify", "--set", f"store.path={uri}", *keys]) == 0
    assert main(["store", "verify", "--set", "store.path=s3://no-such-bucket/x", *keys]) == 1
    assert capsys.readouterr().err == (
        "streamflow: error: store.path: s3://no-such-bucket/x: no such bucket\n"
    )
