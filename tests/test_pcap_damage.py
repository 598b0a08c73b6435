"""Damaged pcap record headers: every valid record around them is read, and each skipped
region is reported with its file, offset and exact length (never dropped silently).

The captures are four TCP sessions (SYN, SYN/ACK, data, FIN) written one after the other;
one record header is then damaged. The oracle is how the file was built: the damaged
header's offset, and the length of its record (16 + its original capture length), which
is where the next record -- the first the reader may use again -- starts.
pcap-savefile(5) and libpcap's sf-pcap.c (a capture length above the snaplen is read,
cut to the snaplen) say what a valid file may hold.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import tcpweave
from craft import ACK, FIN, LINKTYPE_ETHERNET, PSH, SYN, Tcp, ethernet, tcp4, write_pcap

EXE = str(Path(sys.executable).parent / "tcpweave")
SNAPLEN = 65535
T0 = 1_700_000_000_000_000_000


def _sessions(n: int = 4, payload_len: int = 40) -> list[bytes]:
    """Frames of ``n`` sessions, client ports 40000, 40001...: SYN, SYN/ACK, data, FIN."""
    frames = []
    for i in range(n):
        port, c, s = 40000 + i, 1000 * (i + 1), 5000 * (i + 1)
        data = bytes([65 + i % 26]) * payload_len
        for seg, src, dst in (
            (Tcp(port, 80, c, 0, SYN), "10.0.0.1", "10.0.0.2"),
            (Tcp(80, port, s, c + 1, SYN | ACK), "10.0.0.2", "10.0.0.1"),
            (Tcp(port, 80, c + 1, s + 1, PSH | ACK, payload=data), "10.0.0.1", "10.0.0.2"),
            (Tcp(port, 80, c + 1 + len(data), s + 1, FIN | ACK), "10.0.0.1", "10.0.0.2"),
        ):
            frames.append(ethernet(tcp4(seg, src, dst).data))
    return frames


def _write(path: Path, frames: list[bytes], snaplen: int = SNAPLEN) -> list[int]:
    """Write ``frames`` as a pcap (a second apart); returns their record headers' offsets."""
    write_pcap(path, [(T0 + i * 10**9, f, None) for i, f in enumerate(frames)],
               LINKTYPE_ETHERNET, snaplen=snaplen)  # fmt: skip
    offsets, at = [], 24
    for f in frames:
        offsets.append(at)
        at += 16 + (min(len(f), snaplen) if snaplen else len(f))
    return offsets


def _patch(path: Path, at: int, caplen: int | None = None, wirelen: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    if caplen is not None:
        data[at + 8 : at + 12] = struct.pack("<I", caplen)
    if wirelen is not None:
        data[at + 12 : at + 16] = struct.pack("<I", wirelen)
    path.write_bytes(bytes(data))


def _read(path: Path) -> tuple[list[tuple[int, int]], list[Any], Any]:
    """(sport, seq) of every packet, the errors, the stats."""
    with tcpweave.open(path) as cap:
        keys = list(zip(cap.packets.sport.tolist(), cap.packets.seq.tolist(), strict=True))
        return keys, cap.errors, cap.stats


def _keys(frames: list[bytes], lost: set[int]) -> list[tuple[int, int]]:
    out = []
    for i, f in enumerate(frames):
        if i not in lost:
            sport, _dport, seq = struct.unpack("!HHI", f[34:42])
            out.append((sport, seq))
    return out


# -- a damaged header: resync to the very next record, whatever made it implausible ----------

# record 8 is session 2's SYN (60 bytes captured); the values put in its header:
CASES = {
    "caplen 70000 > snaplen, past the end": dict(caplen=70000),
    "caplen 262145 > 256 KiB": dict(caplen=262145),
    "caplen 0xFFFFFFFF": dict(caplen=0xFFFFFFFF),
    "caplen past the end of file, below snaplen": dict(caplen=3000, wirelen=3000),
    "wirelen < caplen, caplen wrong": dict(caplen=64, wirelen=60),
}


@pytest.mark.parametrize("change", CASES.values(), ids=CASES.keys())
def test_a_damaged_header_loses_only_its_record(tmp_path: Path, change: dict[str, int]) -> None:
    frames = _sessions()
    path = tmp_path / "damaged.pcap"
    offsets = _write(path, frames)
    _patch(path, offsets[8], **change)
    keys, errors, stats = _read(path)
    assert keys == _keys(frames, {8})
    assert {sport for sport, _ in keys} == {80, 40000, 40001, 40002, 40003}  # every session
    assert [(e.offset, e.skipped) for e in errors] == [(offsets[8], offsets[9] - offsets[8])]
    assert "corrupt record header" in errors[0].reason
    assert stats.corrupt_records == 1 and stats.skipped_bytes == offsets[9] - offsets[8]


def test_caplen_above_snaplen_inside_a_large_file_resyncs(tmp_path: Path) -> None:
    """70,000 bytes on from the damaged header there is more file (big sessions follow):
    the record is not taken at its word, since the header it points to is not plausible."""
    frames = _sessions(2) + _sessions(80, payload_len=1400)[8:]
    path = tmp_path / "damaged.pcap"
    offsets = _write(path, frames)
    assert os.path.getsize(path) > offsets[4] + 16 + 70000
    _patch(path, offsets[4], caplen=70000)
    keys, errors, _ = _read(path)
    assert keys == _keys(frames, {4})
    assert [(e.offset, e.skipped) for e in errors] == [(offsets[4], offsets[5] - offsets[4])]


def test_caplen_above_snaplen_confirmed_by_the_next_header_is_read_as_libpcap_does(
    tmp_path: Path,
) -> None:
    """A writer that ignored its own snaplen (sf-pcap.c reads such records, cut to the
    snaplen): the next header is sane, so nothing is skipped; the record is kept cut."""
    frames = _sessions(2)
    path = tmp_path / "oversized.pcap"
    offsets = _write(path, frames, snaplen=0)  # every frame whole...
    data = bytearray(path.read_bytes())
    data[16:20] = struct.pack("<I", 60)  # ...under a header that says snaplen 60
    path.write_bytes(bytes(data))
    longer = [i for i, f in enumerate(frames) if len(f) > 60]  # the data segments
    assert longer == [2, 6]
    with tcpweave.open(path) as cap:
        assert len(cap.packets) == len(frames)
        assert cap.packets.payload_caplen.tolist()[2] == 60 - 54
        assert [(e.offset, e.skipped) for e in cap.errors] == [(offsets[i], 0) for i in longer]
        assert cap.stats.skipped_bytes == 0


def test_wirelen_below_caplen_confirmed_by_the_next_header_is_read(tmp_path: Path) -> None:
    frames = _sessions(2)
    path = tmp_path / "odd.pcap"
    offsets = _write(path, frames)
    _patch(path, offsets[3], wirelen=10)
    keys, errors, _ = _read(path)
    assert keys == _keys(frames, set()) and errors == []


def test_a_file_cut_inside_its_last_record_reports_the_cut_record(tmp_path: Path) -> None:
    frames = _sessions(2)
    path = tmp_path / "cut.pcap"
    offsets = _write(path, frames)
    size = offsets[7] + 16 + 20
    path.write_bytes(path.read_bytes()[:size])
    keys, errors, stats = _read(path)
    assert keys == _keys(frames, {7})
    assert [(e.offset, e.skipped) for e in errors] == [(offsets[7], size - offsets[7])]
    assert "cut short by the end of the file" in errors[0].reason
    assert stats.skipped_bytes == size - offsets[7]


# -- the commands: summary on stderr, info, manifest, exit status 3 ---------------------------


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "TCPWEAVE_FAULT"}
    return subprocess.run([EXE, *args], capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def damaged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[int]]:
    """Two damaged headers (records 4 and 9) in a capture of four sessions."""
    path = tmp_path_factory.mktemp("damaged") / "two-damaged.pcap"
    offsets = _write(path, _sessions())
    _patch(path, offsets[4], caplen=70000)
    _patch(path, offsets[9], caplen=262145)
    return path, offsets


def test_extract_lists_each_skipped_region_in_the_manifest(
    damaged: tuple[Path, list[int]], tmp_path: Path
) -> None:
    path, offsets = damaged
    out = tmp_path / "out"
    done = _run("extract", str(path), "-o", str(out))
    assert done.returncode == 3, done.stderr
    regions = [(offsets[4], offsets[5] - offsets[4]), (offsets[9], offsets[10] - offsets[9])]
    assert "2 damaged record(s), " + f"{sum(n for _, n in regions):,} bytes skipped" in done.stderr
    damage = json.loads((out / "manifest.json").read_text())["input_damage"]
    assert [(r["file"], r["offset"], r["length"]) for r in damage["regions"]] == [
        (str(path), at, n) for at, n in regions
    ]
    assert all("corrupt record header" in r["reason"] for r in damage["regions"])
    assert damage["records"] == 2 and damage["regions_listed"] == 2
    assert damage["skipped_bytes"] == sum(n for _, n in regions)
    streams = [json.loads(line) for line in (out / "streams.jsonl").read_text().splitlines()]
    assert sorted({s["sport"] for s in streams if s["direction"] == "c2s"}) == [
        40000, 40001, 40002, 40003
    ]  # fmt: skip
    assert not (out / "INCOMPLETE.json").exists()


def test_info_shows_each_skipped_region(damaged: tuple[Path, list[int]]) -> None:
    path, offsets = damaged
    done = _run("info", str(path))
    assert done.returncode == 3, done.stderr
    assert "bytes skipped (damaged input)" in done.stdout
    for at, end in ((offsets[4], offsets[5]), (offsets[9], offsets[10])):
        line = next(ln for ln in done.stdout.splitlines() if f" {at} " in ln)
        assert f"{end - at:,}" in line


@pytest.mark.parametrize(
    "cmd",
    [["streams"], ["audit"], ["pdus", "--framer", "http"], ["packets", "--format", "csv"]],
    ids=lambda c: c[0],
)
def test_every_command_ends_with_status_3(damaged: tuple[Path, list[int]], cmd: list[str]) -> None:
    path, _ = damaged
    done = _run(cmd[0], str(path), *cmd[1:])
    assert done.returncode == 3, (cmd, done.stderr)
    assert "bytes skipped (exit status 3)" in done.stderr


# -- pcapng: the block lengths are the marker; the skipped region is the damaged block -------


@pytest.mark.parametrize("k", [2, 5])
def test_pcapng_damaged_block_length_skips_exactly_that_block(tmp_path: Path, k: int) -> None:
    blocks = [_block(6, f) for f in _sessions(2)]
    head = [_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)),
            _block(1, struct.pack("<HHI", LINKTYPE_ETHERNET, 0, 0))]  # fmt: skip
    data = bytearray(b"".join(head + blocks))
    at = sum(len(b) for b in head + blocks[:k])
    data[at + 4 : at + 8] = struct.pack("<I", 0xFFFFFFF0)
    path = tmp_path / "damaged.pcapng"
    path.write_bytes(bytes(data))
    keys, errors, stats = _read(path)
    assert keys == _keys(_sessions(2), {k})
    assert [(e.offset, e.skipped) for e in errors] == [(at, len(blocks[k]))]
    assert stats.skipped_bytes == len(blocks[k])


def _block(btype: int, body: bytes) -> bytes:
    """A little-endian pcapng block; for an EPB (6), ``body`` is the frame (interface 0)."""
    if btype == 6:
        body = struct.pack("<IIIII", 0, 0, 1000, len(body), len(body)) + body
    body += b"\x00" * (-len(body) % 4)
    return struct.pack("<II", btype, 12 + len(body)) + body + struct.pack("<I", 12 + len(body))
