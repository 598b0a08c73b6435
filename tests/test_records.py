"""One record per kind, one documented schema (docs/schemas/records-v1.schema.json).

The session record (``streams --format jsonl|csv``) and the direction record (extract's
streams.jsonl) are checked against the JSON Schema file by a small validator of the
keywords it uses (written here from the JSON Schema 2020-12 validation spec); the schema
is checked against the session table, so the three cannot drift apart. CSV: one
convention for every CSV (``\\n`` line ends, booleans ``true``/``false``), equal values
in CSV and JSON; tables for people give times in ISO-8601 UTC.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from sessions import Session
from tcpweave.cli import app
from tcpweave.output.extract import RECORDS_SCHEMA
from tcpweave.output.sessions import SESSION_RECORD_FIELDS, SESSION_SCHEMA

SCHEMA = json.loads((Path(__file__).parents[1] / "docs/schemas/records-v1.schema.json").read_text())
TYPES = {"integer": int, "number": (int, float), "string": str, "array": list, "object": dict,
         "null": type(None), "boolean": bool}  # fmt: skip


def errors(value: Any, schema: dict[str, Any], where: str = "$") -> list[str]:
    """What is wrong with ``value`` under ``schema`` (the keywords the file uses)."""
    if "$ref" in schema:
        return errors(value, SCHEMA["$defs"][schema["$ref"].rsplit("/", 1)[1]], where)
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else kinds
        ok = any(isinstance(value, TYPES[k]) and not (k != "boolean" and isinstance(value, bool))
                 for k in kinds)  # fmt: skip
        if not ok:
            return [f"{where}: {value!r} is not {kinds}"]
    out = []
    if "enum" in schema and value not in schema["enum"]:
        out.append(f"{where}: {value!r} not in {schema['enum']}")
    if "minimum" in schema and value < schema["minimum"]:
        out.append(f"{where}: {value} < {schema['minimum']}")
    if "maximum" in schema and value > schema["maximum"]:
        out.append(f"{where}: {value} > {schema['maximum']}")
    if "pattern" in schema and not re.search(schema["pattern"], value):
        out.append(f"{where}: {value!r} does not match {schema['pattern']}")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        out += [f"{where}: {k} missing" for k in schema.get("required", []) if k not in value]
        if schema.get("additionalProperties") is False:
            out += [f"{where}: {k} not in the schema" for k in value if k not in props]
        for k, v in value.items():
            if k in props:
                out += errors(v, props[k], f"{where}.{k}")
    if isinstance(value, list) and "items" in schema:
        for i, v in enumerate(value):
            out += errors(v, schema["items"], f"{where}[{i}]")
    return out


def _capture(tmp_path: Path) -> Path:
    """A session with a gap, a conflict and a close; and a lone SYN (no byte, no file)."""
    s = Session().handshake()
    s.c(0, b"abcd")
    s.c(10, b"xyz")  # bytes 4..9 never captured: a gap
    s.c(0, b"abXd")  # differs from the first version: a conflict
    s.s(0, b"ok")
    s.close()
    s.trace.session(cport=40001).syn()
    return s.write(tmp_path / "t.pcap")


def _run(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def test_schema_is_the_session_table() -> None:
    """The session record is the session table's columns but the 16-byte addresses, in its
    order; the schema file says so field by field."""
    props = list(SCHEMA["$defs"]["session"]["properties"])
    assert props == list(SESSION_RECORD_FIELDS)
    raw = [f.name for f in SESSION_SCHEMA if f.name not in props]
    assert raw == ["client_addr_raw", "server_addr_raw"]
    assert SCHEMA["$id"] == RECORDS_SCHEMA


def test_session_records_follow_the_schema(tmp_path: Path) -> None:
    lines = _run("streams", str(_capture(tmp_path)), "--format", "jsonl").splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 2
    for rec in records:
        assert errors(rec, SCHEMA["$defs"]["session"]) == []
        assert list(rec) == list(SESSION_RECORD_FIELDS)
    first = records[0]
    assert first["first_ts"] == 1_700_000_000.0  # tests/sessions.py's first frame
    assert (first["gaps_c2s"], first["gap_bytes_c2s"], first["conflicts_c2s"]) == (1, 6, 1)
    assert (first["conn_state"], records[1]["conn_state"]) == ("SF", "S0")


def test_direction_records_follow_the_schema(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _run("extract", str(_capture(tmp_path)), "-o", str(out))
    records = [json.loads(x) for x in (out / "streams.jsonl").read_text().splitlines()]
    assert len(records) == 3  # c2s, s2c, and the lone SYN's direction
    for rec in records:
        assert errors(rec, SCHEMA["$defs"]["direction"]) == [], rec
    c2s = records[0]
    assert c2s["gap_list"] == [{"offset": 4, "length": 6, "reason": "not-captured"}]
    assert [(c["offset"], c["length"]) for c in c2s["conflict_list"]] == [(2, 1)]
    assert records[2]["path"] is None
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["records_schema"] == SCHEMA["$id"]


def test_validator_finds_what_is_wrong() -> None:
    """The validator above can fail: a wrong type, an unknown field, a missing one."""
    session = SCHEMA["$defs"]["session"]
    good = {name: 0 for name in session["properties"]}
    bad = {**good, "client_port": "80", "extra": 1}
    del bad["history"]
    found = " ".join(errors(bad, session))
    assert "client_port" in found and "extra" in found and "history missing" in found


def test_csv_is_the_json_record(tmp_path: Path) -> None:
    """Same fields and values in CSV and JSON Lines; ``\\n`` line ends."""
    path = str(_capture(tmp_path))
    text = _run("streams", path, "--format", "csv")
    assert "\r" not in text
    rows = list(csv.DictReader(io.StringIO(text)))
    records = [json.loads(x) for x in _run("streams", path, "--format", "jsonl").splitlines()]
    assert [list(r) for r in rows] == [list(SESSION_RECORD_FIELDS)] * 2
    for row, rec in zip(rows, records, strict=True):
        assert row == {k: str(v) for k, v in rec.items()}


def test_every_csv_writes_booleans_and_line_ends_alike(tmp_path: Path) -> None:
    """The packets CSV (booleans) as the audit matrix CSV (pyarrow's writer)."""
    path = str(_capture(tmp_path))
    packets = _run("packets", path, "--format", "csv")
    assert "\r" not in packets
    rows = list(csv.DictReader(io.StringIO(packets)))
    assert {r["fragmented"] for r in rows} == {"false"}
    assert {r["sack_permitted"] for r in rows} <= {"true", "false"}
    matrix = tmp_path / "m.csv"
    _run("audit", path, "--matrix", str(matrix))
    text = matrix.read_text()
    assert "\r" not in text and re.search(r",(true|false),", text)


def test_table_for_people_gives_iso_utc(tmp_path: Path) -> None:
    text = _run("streams", str(_capture(tmp_path)))
    assert "2023-11-14T22:13:20.000000Z" in text  # 1,700,000,000 s after the epoch


def test_packet_table_arrow_types_are_the_csv_values(tmp_path: Path) -> None:
    """timestamp[ns, UTC] and the checksum states as dictionary strings, equal to what the
    CSV says, in packets.parquet too (issue 15.2)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    s = Session().handshake()
    s.c(0, b"abcd", checksum="bad")
    s.s(0, b"ok")
    path = s.write(tmp_path / "p.pcap")
    out = tmp_path / "p.parquet"
    runner = CliRunner()
    assert runner.invoke(app, ["packets", str(path), "--parquet", str(out)]).exit_code == 0
    table = pq.read_table(out)
    assert table.schema.field("ts_ns").type == pa.timestamp("ns", tz="UTC")
    for name in ("ip_checksum", "tcp_checksum"):
        assert pa.types.is_dictionary(table.schema.field(name).type)
    text = runner.invoke(app, ["packets", str(path), "--format", "csv"]).stdout
    rows = list(csv.DictReader(io.StringIO(text)))
    assert table.column("tcp_checksum").to_pylist() == [r["tcp_checksum"] for r in rows]
    assert "bad" in table.column("tcp_checksum").to_pylist()
    ns = table.column("ts_ns").cast(pa.int64()).to_pylist()
    assert ns == [int(r["ts_ns"]) for r in rows]
