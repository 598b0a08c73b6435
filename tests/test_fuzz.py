"""Fuzzing ``tcpweave.open``: parse or raise ``CaptureError``, in bounded time and memory.

Inputs are random bytes behind each format's magic, small valid pcap / pcapng /
gzip / zstd captures built here and the shared corpus, after bit flips, byte
overwrites, cuts at every boundary, absurd length fields (0xFFFFFFFF...) and
duplicated or removed pcapng blocks. Any other exception, an open slower than
``TIME_LIMIT_S`` or a large allocation fails the test. Two tests pin down
resynchronisation: after a damaged record in the middle of a file, the
packets before and after it are read and ``errors`` names the file and offset.
"""

from __future__ import annotations

import gzip
import random
import struct
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tcpweave
from conftest import corpus_captures
from tcpweave import CaptureError

TIME_LIMIT_S = 5.0
ABSURD = (0xFFFFFFFF, 0xFFFFFFFC, 0x80000000, 0x7FFFFFFF, 0x01000000, 0)
FUZZ = settings(
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    database=None,
)

# --------------------------------------------------------------------------- building


def _checksum(data: bytes) -> int:
    data += b"\x00" * (len(data) % 2)
    s = sum(struct.unpack(f">{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def tcp_frame(seq: int, payload: bytes = b"hello fuzz") -> bytes:
    """Ethernet + IPv4 + TCP (10.0.0.1:40000 -> 10.0.0.2:80) with correct checksums."""
    src, dst = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
    tcp = struct.pack(">HHIIHHHH", 40000, 80, seq, 1, (5 << 12) | 0x18, 65535, 0, 0) + payload
    pseudo = src + dst + struct.pack(">BBH", 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack(">H", _checksum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack(">BBHHHBBH", 0x45, 0, 20 + len(tcp), seq & 0xFFFF, 0, 64, 6, 0) + src + dst
    ip = ip[:10] + struct.pack(">H", _checksum(ip)) + ip[12:]
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip + tcp


def pcap_file(frames: list[bytes], order: str = "<", nano: bool = False) -> tuple[bytes, list[int]]:
    """A pcap file and the offsets of its record headers."""
    out = struct.pack(order + "IHHiIII", 0xA1B23C4D if nano else 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    offsets = []
    for i, frame in enumerate(frames):
        offsets.append(len(out))
        out += struct.pack(order + "IIII", 1_600_000_000 + i, 1000 * i, len(frame), len(frame))
        out += frame
    return out, offsets


def _block(order: str, btype: int, body: bytes) -> bytes:
    body += b"\x00" * (-len(body) % 4)
    return (
        struct.pack(order + "II", btype, 12 + len(body))
        + body
        + struct.pack(order + "I", 12 + len(body))
    )


def pcapng_blocks(frames: list[bytes], order: str = "<") -> list[bytes]:
    """SHB, one Ethernet IDB (ns resolution), then an EPB per frame (and an SPB)."""
    shb = _block(order, 0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1))
    tsresol = struct.pack(order + "HH", 9, 1) + b"\x09\x00\x00\x00"
    idb = _block(order, 1, struct.pack(order + "HHI", 1, 0, 0) + tsresol)
    blocks = [shb, idb]
    for i, frame in enumerate(frames):
        ts = 1_600_000_000_000_000_000 + i * 1000
        body = struct.pack(order + "IIIII", 0, ts >> 32, ts & 0xFFFFFFFF, len(frame), len(frame))
        blocks.append(_block(order, 6, body + frame))
    blocks.append(_block(order, 3, struct.pack(order + "I", len(frames[0])) + frames[0]))
    return blocks


def seeds() -> dict[str, bytes]:
    frames = [tcp_frame(1000 + 100 * i, bytes([65 + i]) * (5 + i)) for i in range(4)]
    pcap_le = pcap_file(frames)[0]
    ng = b"".join(pcapng_blocks(frames)) + b"".join(pcapng_blocks(frames[:2], ">"))
    return {
        "le.pcap": pcap_le,
        "be-ns.pcap": pcap_file(frames, ">", nano=True)[0],
        "two-sections.pcapng": ng,
        "le.pcap.gz": gzip.compress(pcap_le, mtime=0),
        "ng.pcapng.zst": zstandard.ZstdCompressor().compress(ng),
    }


SEEDS = seeds()

# ---------------------------------------------------------------------------- checking


@pytest.fixture(autouse=True, scope="module")
def compiled_kernels(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Compile (or load) the kernels first: numba's compile time is not the reader's time."""
    where = tmp_path_factory.mktemp("warm")
    for name in ("le.pcap", "two-sections.pcapng"):
        (where / name).write_bytes(SEEDS[name])
        tcpweave.open(where / name).close()


def open_checked(path: Path) -> tcpweave.Capture | None:
    """Open ``path`` and read everything a caller would; CaptureError is the only allowed failure.

    Returns the (closed) Capture, or None when it raised CaptureError.
    """
    start = time.monotonic()
    try:
        cap = tcpweave.open(path)
    except CaptureError as exc:
        assert exc.path == str(path)
        cap = None
    else:
        try:
            _ = (len(cap.packets), cap.stats, [str(e) for e in cap.errors], repr(cap))
            for row in range(min(len(cap.packets), 8)):
                cap.payload(row)
            assert all(e.path for e in cap.errors)
        finally:
            cap.close()
    elapsed = time.monotonic() - start
    assert elapsed < TIME_LIMIT_S, f"{path}: open took {elapsed:.1f} s"
    return cap


def check_bytes(tmp_path: Path, data: bytes, name: str = "fuzz.pcap") -> tcpweave.Capture | None:
    path = tmp_path / name
    path.write_bytes(data)
    try:
        return open_checked(path)
    except AssertionError:
        raise
    except Exception as exc:  # report the input that broke the invariant
        keep = tmp_path / f"crash-{name}"
        keep.write_bytes(data)
        raise AssertionError(f"{type(exc).__name__} on {len(data)} bytes (saved {keep})") from exc


def mutate(rng: random.Random, data: bytes, ops: int = 3) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, ops)):
        at = rng.randrange(max(len(buf), 1))
        op = rng.choice(["flip", "byte", "word", "cut", "dup", "delete"])
        if op == "flip" and buf:
            buf[at] ^= 1 << rng.randrange(8)
        elif op == "byte" and buf:
            buf[at] = rng.randrange(256)
        elif op == "word":
            at -= at % 4
            buf[at : at + 4] = rng.choice(ABSURD).to_bytes(4, rng.choice(["little", "big"]))
        elif op == "cut":
            del buf[at:]
        elif op == "dup":
            buf[at:at] = buf[at : at + rng.randint(1, 64)]
        else:
            del buf[at : at + rng.randint(1, 64)]
    return bytes(buf)


# -------------------------------------------------------------------------------- fuzz


MAGICS = [
    b"\xd4\xc3\xb2\xa1",
    b"\xa1\xb2\xc3\xd4",
    b"\x4d\x3c\xb2\xa1",
    b"\x0a\x0d\x0d\x0a",
    b"\x1f\x8b",
    b"\x28\xb5\x2f\xfd",
    b"",
]


@FUZZ
@given(st.sampled_from(MAGICS), st.binary(max_size=600))
def test_random_bytes_behind_each_magic(tmp_path: Path, magic: bytes, tail: bytes) -> None:
    check_bytes(tmp_path, magic + tail)


@FUZZ
@given(st.sampled_from(sorted(SEEDS)), st.randoms(use_true_random=False))
def test_mutated_seeds(tmp_path: Path, name: str, rng: random.Random) -> None:
    check_bytes(tmp_path, mutate(rng, SEEDS[name], ops=6), name)


@FUZZ
@given(st.randoms(use_true_random=False))
def test_pcapng_blocks_duplicated_removed_swapped(tmp_path: Path, rng: random.Random) -> None:
    blocks = pcapng_blocks([tcp_frame(i) for i in range(5)], rng.choice("<>"))
    for _ in range(rng.randint(1, 4)):
        i, j = rng.randrange(len(blocks)), rng.randrange(len(blocks))
        op = rng.choice(["dup", "remove", "swap"])
        if op == "dup":
            blocks.insert(j, blocks[i])
        elif op == "remove" and len(blocks) > 1:
            del blocks[i]
        else:
            blocks[i], blocks[j] = blocks[j], blocks[i]
    check_bytes(tmp_path, b"".join(blocks), "shuffled.pcapng")


def test_mutated_corpus(tmp_path: Path, corpus: Path) -> None:
    """Eight mutations of every corpus capture, from a few changes to many."""
    rng = random.Random(20240601)
    for path in corpus_captures():
        data = path.read_bytes()
        for k in range(8):
            check_bytes(tmp_path, mutate(rng, data, ops=1 + 2 * k), path.name)


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_cut_at_every_byte(tmp_path: Path, name: str) -> None:
    """Every prefix opens or raises CaptureError; pcap cuts keep exactly the whole records."""
    data = SEEDS[name]
    whole = pcap_file([tcp_frame(1000 + 100 * i, bytes([65 + i]) * (5 + i)) for i in range(4)])
    for cut in range(len(data) + 1):
        cap = check_bytes(tmp_path, data[:cut], name)
        if name == "le.pcap" and cut >= 24:
            complete = sum(1 for off in [*whole[1][1:], len(data)] if off <= cut)
            assert cap is not None and cap.stats.frames == complete, cut
            ends_on_record = cut in (24, *whole[1], len(data))
            assert len(cap.errors) == (0 if ends_on_record else 1), (cut, cap.errors)


@pytest.mark.parametrize("value", ABSURD)
def test_absurd_length_fields_allocate_nothing_large(tmp_path: Path, value: int) -> None:
    """Every 32-bit length field set to an absurd value: bounded allocation and time."""
    frames = [tcp_frame(i) for i in range(3)]
    pcap, offsets = pcap_file(frames)
    fields = [("pcap", pcap, 16)] + [("pcap", pcap, o + d) for o in offsets for d in (8, 12)]
    blocks = pcapng_blocks(frames)
    ng = b"".join(blocks)
    starts = [sum(len(b) for b in blocks[:i]) for i in range(len(blocks))]
    # block length at +4, IDB snaplen at +12, EPB captured / original lengths at +20 / +24
    fields += [("pcapng", ng, s + 4) for s in starts] + [("pcapng", ng, starts[1] + 12)]
    fields += [("pcapng", ng, s + d) for s in starts[2:-1] for d in (20, 24)]
    for kind, data, at in fields:
        for order in ("little", "big"):
            bad = data[:at] + value.to_bytes(4, order) + data[at + 4 :]
            tracemalloc.start()
            try:
                check_bytes(tmp_path, bad, f"absurd.{kind}")
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            assert peak < 64 << 20, f"{kind} field at {at} = {value:#x}: peak {peak >> 20} MiB"


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def test_memory_does_not_grow(tmp_path: Path) -> None:
    """Hundreds of damaged opens leave the resident set where a few dozen left it."""
    rng = random.Random(7)
    names = sorted(SEEDS)

    def batch(n: int) -> None:
        for _ in range(n):
            name = rng.choice(names)
            check_bytes(tmp_path, mutate(rng, SEEDS[name], ops=4), name)

    batch(100)
    before = _rss_bytes()
    batch(600)
    growth = _rss_bytes() - before
    assert growth < 24 << 20, f"RSS grew by {growth >> 20} MiB over 600 opens"


# ---------------------------------------------------------------------------- resync


def _seqs(path: Path) -> list[int]:
    with tcpweave.open(path) as cap:
        return [int(s) for s in cap.packets.seq]


Damage = Callable[[bytearray, int], None]


def _absurd_caplen(buf: bytearray, at: int) -> None:
    buf[at + 8 : at + 12] = b"\xff\xff\xff\xff"


def _garbage_header(buf: bytearray, at: int) -> None:
    buf[at : at + 16] = bytes(range(0xF0, 0x100))


@pytest.mark.parametrize("damage", [_absurd_caplen, _garbage_header], ids=["caplen", "garbage"])
@pytest.mark.parametrize("k", [1, 7, 18])
def test_pcap_resyncs_after_damaged_record(tmp_path: Path, damage: Damage, k: int) -> None:
    frames = [tcp_frame(1000 + i, bytes([97 + i % 26]) * (i + 3)) for i in range(20)]
    data, offsets = pcap_file(frames)
    buf = bytearray(data)
    damage(buf, offsets[k])
    path = tmp_path / "damaged.pcap"
    path.write_bytes(bytes(buf))
    assert _seqs(path) == [1000 + i for i in range(20) if i != k]
    with tcpweave.open(path) as cap:
        assert [(e.path, e.offset) for e in cap.errors] == [(str(path), offsets[k])]
        assert "corrupt record header" in str(cap.errors[0])


@pytest.mark.parametrize("k", [2, 5, 8])
def test_pcapng_resyncs_after_damaged_block(tmp_path: Path, k: int) -> None:
    blocks = pcapng_blocks([tcp_frame(1000 + i) for i in range(8)])
    at = sum(len(b) for b in blocks[:k])
    buf = bytearray(b"".join(blocks))
    buf[at + 4 : at + 8] = struct.pack("<I", 0xFFFFFFF0)
    path = tmp_path / "damaged.pcapng"
    path.write_bytes(bytes(buf))
    seqs = _seqs(path)
    lost = 1000 + k - 2
    assert [s for s in seqs if s != 1000] == [1000 + i for i in range(1, 8) if 1000 + i != lost]
    with tcpweave.open(path) as cap:
        assert [(e.path, e.offset) for e in cap.errors] == [(str(path), at)]


def test_cut_gzip_keeps_what_decoded(tmp_path: Path) -> None:
    frames = [tcp_frame(1000 + i, bytes(200)) for i in range(50)]
    packed = gzip.compress(pcap_file(frames)[0], mtime=0)
    path = tmp_path / "cut.pcap.gz"
    path.write_bytes(packed[: len(packed) * 2 // 3])
    with tcpweave.open(path) as cap:
        assert 0 < len(cap.packets) < 50
        assert _seqs(path) == list(range(1000, 1000 + len(cap.packets)))
        assert cap.errors and all(e.path == str(path) for e in cap.errors)
