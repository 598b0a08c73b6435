"""Map another tool's reassembled streams onto tcpweave's sessions and say where they differ.

Sources: ``tcpflow:DIR`` (files named ``SRCIP.SPORT-DSTIP.DPORT[cN]``, addresses
zero-padded, ``cN`` for the N-th reuse of a 4-tuple as tcpflow 1.6 writes
them), ``tshark`` (``-z follow,tcp,raw,N`` for every stream, many per run),
``manifest:DIR`` (a tcpweave ``streams.jsonl`` with its files: another run,
another policy, a generator's truth).

Each of their streams is a (4-tuple direction, index, bytes). Within one
4-tuple direction, theirs are first paired with ours by identical content,
then the rest in order. A pair is ``identical``, ``prefix`` (one is a prefix of
the other) or ``differs`` (with the first differing offset); ``mixed`` when
their bytes also contain the start of another of our sessions of that 4-tuple
(several sessions in one file). Ours left over are ``missing`` (invisible to
that tool), theirs ``extra`` (additional). Gaps count as zero bytes on both
sides (tcpweave's ``--gaps fill``).
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from tcpweave.errors import UsageError
from tcpweave.output.streams import Stream

#: (src, sport, dst, dport), addresses in their usual printed form
Key = tuple[str, int, str, int]
_TCPFLOW_NAME = re.compile(r"^(.+)\.(\d{5})-(.+)\.(\d{5})(?:c(\d+))?$")
_MIX_PROBE = 32  # bytes of another session's start looked for in a mismatching file
_FOLLOW_BATCH = 200  # follow taps per tshark run


@dataclass
class Theirs:
    key: Key
    index: int  # order among their streams of this 4-tuple direction
    data: bytes
    name: str  # file name, or "tcp.stream N"


@dataclass
class Row:
    status: str  # identical, prefix, differs, mixed, missing, extra
    key: Key
    stream: int | None = None  # ours
    direction: str | None = None
    theirs: str | None = None
    ours_len: int = 0
    theirs_len: int = 0
    first_difference: int | None = None
    mixed_with: list[int] = field(default_factory=list)


@dataclass
class Comparison:
    tool: str
    rows: list[Row]
    ours_streams: int  # our sessions with at least one byte
    theirs_streams: int  # their sessions (directions grouped as they name them)

    def totals(self) -> dict[str, int]:
        out = dict.fromkeys(("identical", "prefix", "differs", "mixed", "missing", "extra"), 0)
        for r in self.rows:
            out[r.status] += 1
        return out

    @property
    def differences(self) -> list[Row]:
        return [r for r in self.rows if r.status != "identical"]

    @property
    def delta(self) -> int:
        return self.ours_streams - self.theirs_streams

    @property
    def I_p(self) -> float | None:
        return 1 - self.theirs_streams / self.ours_streams if self.delta > 0 else None

    @property
    def A_p(self) -> float | None:
        return 1 - self.ours_streams / self.theirs_streams if self.delta < 0 else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "totals": self.totals(),
            "ours_streams": self.ours_streams,
            "theirs_streams": self.theirs_streams,
            "I_p": self.I_p,
            "A_p": self.A_p,
            "rows": [
                {"status": r.status, "stream": r.stream, "direction": r.direction,
                 "src": r.key[0], "sport": r.key[1], "dst": r.key[2], "dport": r.key[3],
                 "theirs": r.theirs, "ours_len": r.ours_len, "theirs_len": r.theirs_len,
                 "first_difference": r.first_difference, "mixed_with": r.mixed_with}
                for r in self.rows
            ],
        }  # fmt: skip


# ------------------------------------------------------------------ reading their output


def read_tcpflow(directory: Path) -> list[Theirs]:
    """Every tcpflow output file in ``directory`` (report.xml and other names are skipped)."""
    out = []
    for path in sorted(directory.iterdir()):
        m = _TCPFLOW_NAME.match(path.name)
        if not m or not path.is_file():
            continue
        try:
            src = str(ipaddress.ip_address(_unpad(m[1])))
            dst = str(ipaddress.ip_address(_unpad(m[3])))
        except ValueError:
            continue
        key = (src, int(m[2]), dst, int(m[4]))
        out.append(Theirs(key, int(m[5] or 0), path.read_bytes(), path.name))
    return out


def _unpad(addr: str) -> str:
    if addr.count(".") == 3 and ":" not in addr:
        return ".".join(str(int(part)) for part in addr.split("."))
    return addr


def read_manifest(directory: Path) -> list[Theirs]:
    """A tcpweave-format ``streams.jsonl`` and the files it names."""
    manifest = directory / "streams.jsonl"
    if not manifest.is_file():
        raise UsageError(f"{manifest}: no streams.jsonl")
    out = []
    for line in manifest.read_text().splitlines():
        if not line.strip():
            continue
        rec = orjson.loads(line)
        if not rec.get("path"):
            continue  # a direction with packets but no bytes: no file, as in our own output
        key = (str(rec["src"]), int(rec["sport"]), str(rec["dst"]), int(rec["dport"]))
        data = (directory / rec["path"]).read_bytes()
        out.append(Theirs(key, int(rec.get("session", 0)), data, rec["path"]))
    return out


def run_tcpflow(capture: Path, directory: Path) -> Path:
    tool = shutil.which("tcpflow")
    if tool is None:
        raise UsageError("tcpflow is not installed")
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run([tool, "-r", str(capture), "-o", str(directory)], check=True,
                   capture_output=True)  # fmt: skip
    return directory


def read_tshark(capture: Path, n_streams: int) -> list[Theirs]:
    """``tshark -q -z follow,tcp,raw,N`` for streams 0..n-1, many taps per run."""
    tool = shutil.which("tshark")
    if tool is None:
        raise UsageError("tshark is not installed")
    out: list[Theirs] = []
    for lo in range(0, n_streams, _FOLLOW_BATCH):
        taps = []
        for s in range(lo, min(n_streams, lo + _FOLLOW_BATCH)):
            taps += ["-z", f"follow,tcp,raw,{s}"]
        res = subprocess.run([tool, "-r", str(capture), "-q", *taps], check=True,
                             capture_output=True, text=True)  # fmt: skip
        out += parse_follow_raw(res.stdout)
    return out


def parse_follow_raw(text: str) -> list[Theirs]:
    """Streams of tshark's raw follow output (node 0's lines flush left, node 1's indented)."""
    out: list[Theirs] = []
    blocks = text.split("===================================================================")
    for block in blocks:
        m = re.search(r"Filter: tcp\.stream eq (\d+)", block)
        nodes = re.findall(r"Node (\d): (.+):(\d+)\n", block)
        if not m or len(nodes) < 2:
            continue
        ends = [(n[1].strip("[]"), int(n[2])) for n in sorted(nodes)]
        data = [bytearray(), bytearray()]
        for line in block.split("\n"):
            if not line or line.startswith(("Follow:", "Filter:", "Node ")):
                continue
            node = 1 if line.startswith("\t") else 0
            try:
                data[node] += bytes.fromhex(line.strip())
            except ValueError:
                continue
        for node in (0, 1):
            (a, ap), (b, bp) = ends[node], ends[1 - node]
            if data[node]:
                key = (str(ipaddress.ip_address(a)), ap, str(ipaddress.ip_address(b)), bp)
                out.append(Theirs(key, int(m[1]), bytes(data[node]),
                                  f"tcp.stream {m[1]} node {node}"))  # fmt: skip
    return out


# ------------------------------------------------------------------ matching


@dataclass
class _Ours:
    stream: int
    direction: str
    data: bytes


def _our_directions(streams: list[Stream]) -> dict[Key, list[_Ours]]:
    ours: dict[Key, list[_Ours]] = defaultdict(list)
    for s in streams:
        for d in (s.c2s, s.s2c):
            if d.length > 0:
                ours[(d.src, d.sport, d.dst, d.dport)].append(_Ours(s.index, d.name, d.bytes()))
    return ours


def compare(streams: list[Stream], theirs: list[Theirs], tool: str) -> Comparison:
    ours = _our_directions(streams)
    by_key: dict[Key, list[Theirs]] = defaultdict(list)
    for t in theirs:
        by_key[t.key].append(t)
    rows: list[Row] = []
    for key in sorted(set(ours) | set(by_key), key=str):
        rows += _match_key(key, ours.get(key, []), sorted(by_key.get(key, []),
                                                           key=lambda t: t.index))  # fmt: skip
    rows.sort(key=lambda r: (r.stream if r.stream is not None else 1 << 62, r.direction or ""))
    ours_sessions = {o.stream for lst in ours.values() for o in lst}
    their_sessions = {(_unordered(t.key), t.index) for t in theirs}
    return Comparison(tool, rows, len(ours_sessions), len(their_sessions))


def _unordered(key: Key) -> tuple[tuple[str, int], tuple[str, int]]:
    a, b = (key[0], key[1]), (key[2], key[3])
    return (a, b) if a <= b else (b, a)


def _match_key(key: Key, ours: list[_Ours], theirs: list[Theirs]) -> list[Row]:
    rows = []
    left_ours = list(ours)
    left_theirs = []
    for t in theirs:  # identical content first, wherever the sessions were cut
        same = next((o for o in left_ours if o.data == t.data), None)
        if same is None:
            left_theirs.append(t)
            continue
        left_ours.remove(same)
        rows.append(Row("identical", key, same.stream, same.direction, t.name,
                        len(same.data), len(t.data)))  # fmt: skip
    for o, t in zip(left_ours, left_theirs, strict=False):
        rows.append(_pair(key, o, t, ours))
    for o in left_ours[len(left_theirs) :]:
        rows.append(Row("missing", key, o.stream, o.direction, None, len(o.data), 0))
    for t in left_theirs[len(left_ours) :]:
        rows.append(Row("extra", key, None, None, t.name, 0, len(t.data)))
    return rows


def _pair(key: Key, o: _Ours, t: Theirs, all_ours: list[_Ours]) -> Row:
    n = min(len(o.data), len(t.data))
    first = next((i for i in range(n) if o.data[i] != t.data[i]), None) if n else None
    if first is None and o.data[:n] != t.data[:n]:
        first = 0
    mixed = [x.stream for x in all_ours
             if x is not o and x.data and x.data[:_MIX_PROBE] in t.data]  # fmt: skip
    status = "mixed" if mixed else ("prefix" if first is None else "differs")
    if first is None and len(o.data) != len(t.data):
        first = n
    return Row(status, key, o.stream, o.direction, t.name, len(o.data), len(t.data), first, mixed)


def against(spec: str, capture: Path, n_streams: int, run: bool, workdir: Path) -> list[Theirs]:
    """Their streams for ``--against`` SPEC (``tcpflow:DIR``, ``tshark``, ``manifest:DIR``)."""
    kind, _, arg = spec.partition(":")
    if kind == "tcpflow":
        directory = Path(arg) if arg else workdir / "tcpflow"
        if run:
            run_tcpflow(capture, directory)
        if not directory.is_dir():
            raise UsageError(f"{directory}: no tcpflow output (use --run to produce it)")
        return read_tcpflow(directory)
    if kind == "tshark":
        return read_tshark(capture, n_streams)
    if kind == "manifest":
        return read_manifest(Path(arg))
    raise UsageError(f"--against {spec!r}: use tcpflow:DIR, tshark or manifest:DIR")


__all__ = [
    "Comparison",
    "Row",
    "Theirs",
    "against",
    "compare",
    "parse_follow_raw",
    "read_manifest",
    "read_tcpflow",
    "run_tcpflow",
]
