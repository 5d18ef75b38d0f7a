from pathlib import Path

from streamflow.collectors.produce import read_records


def test_json_lines_with_a_bad_line_keep_going(tmp_path: Path) -> None:
    p = tmp_path / "r.jsonl"
    p.write_text('{"device_id": "a", "cpu_temp_c": 50}\nnot json\n\n[1, 2]\n{"device_id": "b"}\n')
    rows = list(read_records(p))
    assert [r[0] for r in rows] == [1, 2, 4, 5]
    assert rows[0][1] == {"device_id": "a", "cpu_temp_c": 50}
    assert rows[1][1] is None and rows[1][2].startswith("invalid JSON")
    assert rows[2][2] == "not a JSON object"
    assert rows[3][1] == {"device_id": "b"}


def test_csv_empty_cells_are_null_and_numbers_are_numbers(tmp_path: Path) -> None:
    p = tmp_path / "r.csv"
    p.write_text(
        "device_id,timestamp,cpu_temp_c,status\nrack1,1700000000000,55.5,\nrack2,1700000000001,,ok\n"
    )
    rows = [r[1] for r in read_records(p)]
    assert rows == [
        {"device_id": "rack1", "timestamp": 1700000000000, "cpu_temp_c": 55.5, "status": None},
        {"device_id": "rack2", "timestamp": 1700000000001, "cpu_temp_c": None, "status": "ok"},
    ]
