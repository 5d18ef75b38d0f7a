"""``streamflow query`` over stores in the store step's layout: the views, the de-duplication,
partition pruning, each output format, the summary's figures and columns, an empty or missing
store, and S3 through fsspec with DuckDB's extensions never installed nor loaded."""

from __future__ import annotations

import csv
import io
import json
import re
import socket
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from streamflow.cli import main
from streamflow.cli.query import summary_spec, summary_table
from streamflow.settings import OutputSpec, Settings
from streamflow.settings.schema import Secret
from streamflow.store.files import Storage, StoreError
from streamflow.store.query import open_store
from tests.conftest import ROOT
from tests.s3server import S3Server
from tests.unit.store.conftest import H7, H8, publish, result, settings_for

pytest_plugins = ["tests.s3server"]  # the s3_server fixture


def rows(store: Path, sql: str) -> list[tuple[Any, ...]]:
    q = open_store(settings_for(store))
    try:
        return list(q.query(sql).fetchall())
    finally:
        q.close()


def files_read(store: Path, sql: str) -> int:
    """How many files DuckDB read for ``sql`` (its EXPLAIN ANALYZE)."""
    plan = rows(store, f"EXPLAIN ANALYZE {sql}")[0][1]
    return sum(int(n) for n in re.findall(r"Total Files Read: *(\d+)", plan))


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["query", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_views_count_every_row_and_each_source_record_once(store: Path) -> None:
    assert rows(store, "SELECT count(*) FROM results_all") == [(19,)]
    assert rows(store, "SELECT count(*) FROM results") == [(18,)]
    kept = rows(store, "SELECT kafka_offset FROM results WHERE sf_source_offset = 104")
    assert kept == [(4,)]  # the first by Kafka offset
    assert rows(store, "SELECT count(*), min(stage) FROM dead_letters") == [(2, "clean")]
    hours = rows(store, "SELECT date, hour, count(*) FROM results GROUP BY ALL ORDER BY ALL")
    assert [(str(d), h, n) for d, h, n in hours] == [
        ("2026-12-01", 7, 9),
        ("2026-12-01", 8, 5),
        ("2026-12-02", 0, 4),
    ]


def test_rows_without_source_coordinates_are_all_kept(tmp_path: Path) -> None:
    publish(Storage(str(tmp_path)), H7, [result(None, 0.1), result(None, 0.2)], 0)
    assert rows(tmp_path, "SELECT count(*) FROM results") == [(2,)]


def test_a_filter_on_date_and_hour_reads_only_those_folders(store: Path) -> None:
    assert files_read(store, "SELECT count(*) FROM results") == 4
    assert files_read(store, "SELECT count(*) FROM results WHERE hour = 7") == 2
    one = "SELECT score FROM results WHERE date = '2026-12-01' AND hour = 8"
    assert files_read(store, one) == 1
    assert files_read(store, "SELECT count(*) FROM results_all WHERE date = '2026-12-02'") == 1
    assert rows(store, "SELECT count(*) FROM results WHERE date = '2026-12-01' AND hour = 7") == [
        (9,)
    ]


def test_each_output_format(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sql = (
        "SELECT sf_source_offset AS src, score, label, kafka_timestamp, date, hour FROM results "
        "WHERE hour = 8 ORDER BY src"
    )
    at = f"store.path={store}"
    code, out, _ = cli(capsys, sql, "--set", at)
    lines = out.splitlines()
    assert code == 0
    assert lines[0].split() == ["src", "score", "label", "kafka_timestamp", "date", "hour"]
    assert set(lines[1]) == {"-", " "}
    assert lines[2].split()[:3] == ["200", "0.6", "anomaly"]
    assert "2026-12-01 08:00:00.010+00:00" in lines[2]
    assert lines[-1] == "(5 rows)"
    assert len({len(line) for line in lines[2:7]}) == 1  # aligned

    code, out, _ = cli(capsys, sql, "--set", at, "--format", "csv")
    got = list(csv.DictReader(io.StringIO(out)))
    assert [r["src"] for r in got] == ["200", "201", "202", "203", "204"]
    assert got[0]["label"] == "anomaly" and got[0]["date"] == "2026-12-01"
    assert got[0]["score"] == "0.6" and got[0]["kafka_timestamp"] == "2026-12-01 08:00:00.010+00:00"

    code, out, _ = cli(capsys, sql, "--set", at, "--format", "jsonl")
    recs = [json.loads(line) for line in out.splitlines()]
    assert recs[0] == {
        "src": 200,
        "score": 0.6,
        "label": "anomaly",
        "kafka_timestamp": "2026-12-01T08:00:00.010000+00:00",
        "date": "2026-12-01",
        "hour": 8,
    }

    path = tmp_path / "out.parquet"
    code, _, _ = cli(capsys, sql, "--set", at, "--format", "parquet", "--out", str(path))
    assert code == 0 and pq.read_table(path).column("src").to_pylist() == [200, 201, 202, 203, 204]

    code, out, _ = cli(capsys, "SELECT * FROM dead_letters", "--set", at, "--format", "jsonl")
    assert json.loads(out.splitlines()[0])["value"] == "\\xff\x00bad"  # bytes: text, \x escapes


def test_a_table_shows_max_rows(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(
        capsys, "SELECT * FROM results", "--set", f"store.path={store}", "--max-rows", "3"
    )
    assert code == 0 and len(out.splitlines()) == 2 + 3 + 1
    assert out.splitlines()[-1].startswith("(first 3 rows shown")


def test_summary_figures(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "--summary", "--set", f"store.path={store}", "--format", "jsonl")
    got = [json.loads(line) for line in out.splitlines()]
    assert code == 0
    assert got == [
        # hour 7: sources 100-108 once each (104 repeated, counted once): 2 anomalies of 9
        {"date": "2026-12-01", "hour": 7, "model_version": "1.0.0", "records": 9,
         "anomaly_rate": pytest.approx(2 / 9), "mean_score": pytest.approx((2.3 + 0.4) / 9)},
        {"date": "2026-12-01", "hour": 8, "model_version": "1.1.0", "records": 5,
         "anomaly_rate": 1.0, "mean_score": pytest.approx(0.6)},
        {"date": "2026-12-02", "hour": 0, "model_version": "1.0.0", "records": 4,
         "anomaly_rate": 0.0, "mean_score": pytest.approx(0.4)},
    ]  # fmt: skip
    code, out, _ = cli(capsys, "--summary", "--set", f"store.path={store}")
    assert out.splitlines()[0].split() == [
        "date", "hour", "model_version", "records", "anomaly_rate", "mean_score",
    ]  # fmt: skip


def test_summary_of_a_classifier_reads_its_label_and_the_winning_probability(
    tmp_path: Path,
) -> None:
    s = settings_for(tmp_path, ROOT / "pipelines" / "fleet-health.toml")
    columns = ["host", "timestamp", "health", "p_healthy", "p_thermal", "p_power", "p_disk",
               "rack", "status", "model_name", "model_version", "latency_ms", "sf_source_topic",
               "sf_source_partition", "sf_source_offset", "kafka_partition", "kafka_offset",
               "kafka_timestamp", "date", "hour"]  # fmt: skip
    types = ["VARCHAR", "TIMESTAMP WITH TIME ZONE", "VARCHAR", *["DOUBLE"] * 4, "VARCHAR",
             "VARCHAR", "VARCHAR", "VARCHAR", "DOUBLE", "VARCHAR", "INTEGER", "BIGINT",
             "INTEGER", "BIGINT", "TIMESTAMP WITH TIME ZONE", "DATE", "INTEGER"]  # fmt: skip
    spec = summary_spec(s, columns, types)
    assert spec.label == "health" and spec.only == ""
    assert spec.score == 'greatest("p_healthy", "p_thermal", "p_power", "p_disk")'
    assert spec.score_name == "mean_max_p"

    tele = summary_spec(
        settings_for(tmp_path),
        ["device_id", "timestamp", "score", "label"],
        types[:2] + ["DOUBLE", "VARCHAR"],
    )
    assert (tele.label, tele.only, tele.labels, tele.score_name) == (
        "label",
        "anomaly",
        ("normal", "anomaly"),
        "mean_score",
    )


def test_summary_shares_of_each_label(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path))
    rs = [result(i, 0.1) for i in range(4)]
    for r, health in zip(rs, ["healthy", "healthy", "disk", "thermal"], strict=True):
        r["label"] = health
    publish(storage, H7, rs, 0)
    declared = (OutputSpec("label", "output_label", "identity"),)  # no threshold: every label
    s = replace(settings_for(tmp_path), outputs=declared)
    q = open_store(s)
    try:
        t = summary_table(q, s).to_pylist()
    finally:
        q.close()
    assert t[0]["records"] == 4
    assert (t[0]["healthy_rate"], t[0]["disk_rate"], t[0]["thermal_rate"]) == (0.5, 0.25, 0.25)


def test_an_empty_store_gives_empty_views_and_a_note(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert rows(tmp_path, "SELECT count(*) FROM results") == [(0,)]
    assert rows(tmp_path, "SELECT count(score), count(*) FROM results_all") == [(0, 0)]
    assert rows(tmp_path, "SELECT count(reason_code) FROM dead_letters") == [(0,)]
    code, out, err = cli(capsys, "--summary", "--set", f"store.path={tmp_path}")
    assert code == 0 and out.splitlines()[-1] == "(0 rows)"
    assert err.strip() == f"note: no results stored in {tmp_path} yet: results_all is empty"


def test_a_missing_store_is_one_line_naming_store_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(capsys, "SELECT 1", "--set", f"store.path={tmp_path}/nothing")
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith("streamflow: error: store.path: ")
    code, _, err = cli(capsys, "SELECT nope FROM results", "--set", f"store.path={tmp_path}")
    assert code == 1 and "nope" in err and "Traceback" not in err
    (tmp_path / "results" / H7).mkdir(parents=True)
    (tmp_path / "results" / H7 / "t+0+0000000000000000000.parquet").write_bytes(b"no parquet")
    code, _, err = cli(capsys, "SELECT 1", "--set", f"store.path={tmp_path}")
    assert code == 1 and err.startswith(f"streamflow: error: store.path: cannot read {tmp_path}: ")


def test_no_duckdb_extension_is_installed_or_loaded(store: Path) -> None:
    q = open_store(settings_for(store))
    try:
        q.query("SELECT count(*) FROM results").fetchall()
        autoload = q.query(
            "SELECT current_setting('autoinstall_known_extensions'), "
            "current_setting('autoload_known_extensions')"
        ).fetchall()
        outside = q.query(
            "SELECT extension_name FROM duckdb_extensions() "
            "WHERE (loaded OR installed) AND install_path <> '(BUILT-IN)'"
        ).fetchall()
    finally:
        q.close()
    assert autoload == [(False, False)] and outside == []


# ----------------------------------------------------------------------------------- S3


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def s3_settings(s3: S3Server, uri: str) -> Settings:
    return settings_for(
        uri,
        s3_endpoint=s3.endpoint,
        s3_region=s3.region,
        s3_access_key_id=s3.access_key_id,
        s3_secret_access_key=Secret(s3.secret_access_key),
    )


def test_s3_is_read_through_fsspec_without_httpfs(s3_server: S3Server) -> None:
    uri = s3_server.prefix()
    storage = s3_server.storage(uri)
    publish(storage, H7, [result(i, 0.9) for i in range(3)], 0)
    publish(storage, H8, [result(10 + i, 0.1, H8) for i in range(2)], 3)
    q = open_store(s3_settings(s3_server, uri))
    try:
        assert q.notes_for("results") == []
        assert q.query("SELECT count(*) FROM results WHERE hour = 7").fetchall() == [(3,)]
        plan = q.query("EXPLAIN ANALYZE SELECT count(*) FROM results WHERE hour = 8").fetchall()
        assert re.findall(r"Total Files Read: *(\d+)", plan[0][1]) == ["1"]
        outside = q.query(
            "SELECT extension_name FROM duckdb_extensions() "
            "WHERE (loaded OR installed) AND install_path <> '(BUILT-IN)'"
        )
        assert outside.fetchall() == []
    finally:
        q.close()
    empty = open_store(s3_settings(s3_server, s3_server.prefix()))
    try:
        assert empty.query("SELECT count(*) FROM results").fetchall() == [(0,)]
    finally:
        empty.close()
    with pytest.raises(StoreError, match=r"^store.path: cannot read s3://no-such-bucket/x: "):
        open_store(s3_settings(s3_server, "s3://no-such-bucket/x"))


def test_an_unreachable_s3_fails_fast_naming_store_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    endpoint = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    t = time.monotonic()
    code, _, err = cli(
        capsys, "SELECT 1", "--set", "store.path=s3://bucket/x",
        "--set", f"store.s3_endpoint={endpoint}",
        "--set", "store.s3_access_key_id=k", "--set", "store.s3_secret_access_key=s",
    )  # fmt: skip
    assert code == 1 and time.monotonic() - t < 20
    assert err.startswith("streamflow: error: store.path: cannot read s3://bucket/x: ")
    assert err.count("\n") == 1
