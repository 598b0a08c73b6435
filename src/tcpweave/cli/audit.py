"""``tcpweave audit`` and ``tcpweave compare``: thin layers over tcpweave.audit."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer
from rich.console import Console

from tcpweave.cli.options import (
    JOBS_DEFAULT,
    Captures,
    ChecksumOpt,
    JobsOpt,
    PartitionRowsOpt,
    PolicyOpt,
    open_run,
)
from tcpweave.errors import UsageError
from tcpweave.run.settings import ROWS_PER_PARTITION

if TYPE_CHECKING:
    from rich.table import Table

    import tcpweave
    from tcpweave.audit import Audit

__all__ = ["audit_cmd", "compare_cmd"]

_SHOWN = 10  # mismatching streams and differences listed in the human output


def _stdout() -> Console:
    console = Console()
    return console if console.is_terminal else Console(width=200)


def _open(paths: list[Path]) -> tcpweave.Capture:
    import tcpweave
    from tcpweave.cli import render

    cap = tcpweave.open(paths)
    render.report_errors(Console(stderr=True, soft_wrap=True), cap)
    return cap


def parse_port_range(text: str) -> tuple[int, int]:
    lo, sep, hi = text.partition("-")
    try:
        a, b = int(lo), int(hi)
    except ValueError:
        raise UsageError(f"--port-range {text!r}: expected LOW-HIGH, e.g. 32768-60999") from None
    if not sep or not 0 <= a <= b <= 65535:
        raise UsageError(f"--port-range {text!r}: expected LOW-HIGH within 0-65535")
    return a, b


def _opt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def summary_table(a: Audit) -> Table:
    from rich.table import Table

    t = Table(title=f"audit of {', '.join(a.captures)} (policy {a.policy}, checksums "
              f"{a.checksums})", title_justify="left", show_header=True)  # fmt: skip
    t.add_column("figure", no_wrap=True)
    t.add_column("value", justify="right", no_wrap=True)
    t.add_column("what it counts")
    for figure, value, what in a.figure_rows():
        t.add_row(figure, value, what)
    return t


def mismatch_table(a: Audit) -> Table | None:
    from rich.table import Table

    rows = a.mismatches()
    if not rows:
        return None
    t = Table(title=f"sessions behind E - S ({len(rows):,})", title_justify="left")
    for head in ("stream", "client", "server", "flag sessions", "produced", "kind"):
        t.add_column(head, no_wrap=True)
    for m in rows[:_SHOWN]:
        t.add_row(str(m["stream"]), m["client"], m["server"], str(m["flag_sessions"]),
                  str(m["produced"]), m["kind"])  # fmt: skip
    if len(rows) > _SHOWN:
        t.caption = f"... {len(rows) - _SHOWN:,} more (--json lists all)"
    return t


def audit_cmd(
    captures: Captures,
    json_out: Annotated[bool, typer.Option("--json", help="Print the stable JSON report.")] = False,
    matrix: Annotated[
        Path | None,
        typer.Option(
            "--matrix", metavar="FILE", help="Write the verification matrix (.parquet, else CSV)."
        ),
    ] = None,
    port_range: Annotated[
        str,
        typer.Option(metavar="LOW-HIGH", help="Ephemeral port range for P_b (Linux: 32768-60999)."),
    ] = "1024-65534",
    policy: PolicyOpt = "first",
    checksums: ChecksumOpt = "auto",
    jobs: JobsOpt = JOBS_DEFAULT,
    partition_rows: PartitionRowsOpt = ROWS_PER_PARTITION,
) -> None:
    """Forensic accuracy figures, per-packet verification matrix and per-stream verdicts."""
    from tcpweave.run import audit as run_audit

    ports = parse_port_range(port_range)
    with open_run(captures, policy, checksums, jobs, partition_rows) as run:
        a = run_audit(run, ports, None if matrix is None else str(matrix))
    if json_out:
        sys.stdout.write(orjson.dumps(a.to_dict(), option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    console = _stdout()
    console.print(summary_table(a))
    more = mismatch_table(a)
    if more is not None:
        console.print(more)


def compare_cmd(
    capture: Annotated[Path, typer.Argument(help="Capture file.")],
    against_spec: Annotated[
        str, typer.Option("--against", help="tcpflow:DIR, tshark, or manifest:DIR.")
    ],
    run: Annotated[bool, typer.Option("--run", help="Run tcpflow into DIR first.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    policy: PolicyOpt = "first",
    checksums: ChecksumOpt = "auto",
) -> None:
    """Compare another tool's reassembled streams with tcpweave's, stream by stream.

    Exit status 1 when any stream differs, 0 when all agree.
    """
    from tcpweave.audit.compare import against, compare

    with _open([capture]) as cap, tempfile.TemporaryDirectory() as tmp:
        streams = cap.streams(policy, checksums)
        theirs = against(against_spec, capture, len(streams), run, Path(tmp))
        result = compare(streams, theirs, against_spec.partition(":")[0])
    if json_out:
        sys.stdout.write(orjson.dumps(result.to_dict(), option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        table = _compare_table(result.to_dict())
        # all identical: the summary line alone, not an empty table under it
        _stdout().print(table if table.row_count else table.title)
    if result.differences:
        raise typer.Exit(1)


def _compare_table(d: dict[str, Any]) -> Table:
    from rich.table import Table

    from tcpweave.cli import render

    totals = ", ".join(f"{k} {v}" for k, v in d["totals"].items())
    t = Table(title=f"{d['tool']} against tcpweave: {totals}; ours {d['ours_streams']} streams, "
              f"theirs {d['theirs_streams']}; I_p {_opt(d['I_p'])}, A_p {_opt(d['A_p'])}",
              title_justify="left")  # fmt: skip
    for head in ("status", "stream", "dir", "source", "destination", "theirs", "ours", "len",
                 "first diff", "mixed with"):  # fmt: skip
        t.add_column(head, no_wrap=True)
    for r in d["rows"]:
        if r["status"] == "identical":
            continue
        t.add_row(r["status"], _s(r["stream"]), _s(r["direction"]),
                  render.endpoint(r["src"], r["sport"]), render.endpoint(r["dst"], r["dport"]),
                  _s(r["theirs"]), str(r["ours_len"]), str(r["theirs_len"]),
                  _s(r["first_difference"]), ",".join(map(str, r["mixed_with"])))  # fmt: skip
    return t


def _s(v: object) -> str:
    return "" if v is None else str(v)
