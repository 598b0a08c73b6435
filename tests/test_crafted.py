"""tcpweave against captures crafted by tests/craft.py, an independent builder.

Every expected value comes from how the capture was built (craft.Row, craft.Crafted),
never from running tcpweave. Rows are matched by sequence number, which craft keeps
distinct within a capture. The last tests hold craft itself against tshark.
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import craft
import tcpweave

CAPTURES = (
    "eth_le_usec.pcap",
    "eth_be_usec.pcap",
    "eth_le_nsec.pcap",
    "eth_be_nsec.pcap",
    "raw_ip.pcap",
    "linktype_ipv4.pcap",
    "linktype_ipv6.pcap",
    "null_le.pcap",
    "null_be.pcap",
    "null_af10.pcap",
    "loop.pcap",
    "linux_sll.pcap",
    "linux_sll2.pcap",
    "unknown_linktype.pcap",
    "vlan.pcap",
    "ipv4_options.pcap",
    "ipv6_ext.pcap",
    "ipv6_jumbo.pcap",
    "frag_v4.pcap",
    "frag_v6.pcap",
    "frag_v4_overlap.pcap",
    "frag_v6_overlap.pcap",
    "truncated.pcap",
    "tso.pcap",
    "multi_section.pcapng",
    "eth_le.pcapng",
    "eth_be.pcapng",
    "split_b_early.pcap",
    "split_a_late.pcap",
    "eth_le_usec.pcap.gz",
    "eth_be_nsec.pcap.zst",
    "multi_section.pcapng.gz",
    "multi_section.pcapng.zst",
)

#: Row fields compared one to one with the packet-table column of the same name
SCALAR_FIELDS = (
    "frame",
    "ts_ns",
    "caplen",
    "wirelen",
    "ip_version",
    "sport",
    "dport",
    "ttl",
    "ip_id",
    "fragmented",
    "seq",
    "ack",
    "flags",
    "window",
    "urgent",
    "tcp_header_len",
    "payload_len",
    "payload_caplen",
    "ip_checksum",
    "tcp_checksum",
    "mss",
    "wscale",
    "sack_permitted",
    "ts_present",
    "ts_val",
    "ts_ecr",
)


@pytest.fixture(scope="session")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> dict[str, craft.Crafted]:
    return craft.build_catalog(tmp_path_factory.mktemp("crafted"))


@pytest.fixture
def opened(catalog: dict[str, craft.Crafted]) -> Iterator[Any]:
    """Open crafted captures by name; every capture opened is closed at teardown."""
    caps: list[Any] = []

    def _open(*names: str) -> Any:
        paths = [catalog[n].path for n in names]
        cap = tcpweave.open(paths[0] if len(paths) == 1 else paths)
        caps.append(cap)
        return cap

    yield _open
    for cap in caps:
        cap.close()


def _row_dicts(cap: Any) -> dict[int, dict[str, Any]]:
    """The packet table as {seq: row}, with printed addresses and captured payload bytes."""
    p = cap.packets
    src, dst = p.address_strings("src"), p.address_strings("dst")
    rows: dict[int, dict[str, Any]] = {}
    for i in range(len(p)):
        row = {name: getattr(p, name)[i].item() for name in SCALAR_FIELDS}
        start, n = int(p.payload_offset[i]), int(p.payload_caplen[i])
        row["payload"] = cap.sources[int(p.file[i])].buffer[start : start + n].tobytes()
        row["src"], row["dst"] = src[i], dst[i]
        assert row["seq"] not in rows, f"two rows with seq {row['seq']}"
        rows[row["seq"]] = row
    return rows


def _differences(expected: craft.Row, got: dict[str, Any]) -> list[str]:
    out = []
    for name in (*SCALAR_FIELDS, "payload"):
        want = getattr(expected, name)
        if want is not None and got[name] != want:
            shown = got[name][:40] if isinstance(got[name], bytes) else got[name]
            out.append(f"{name}: got {shown!r}, built {str(want)[:40]}")
    for name in ("src", "dst"):
        want = str(ipaddress.ip_address(getattr(expected, name)))
        if got[name] != want:
            out.append(f"{name}: got {got[name]}, built {want}")
    return out


def test_catalog_writes_every_named_capture(catalog: dict[str, craft.Crafted]) -> None:
    assert set(catalog) == set(CAPTURES)
    assert all(c.path.is_file() and c.path.stat().st_size > 24 for c in catalog.values())


@pytest.mark.parametrize("name", CAPTURES)
def test_packet_rows_match_construction(
    name: str, catalog: dict[str, craft.Crafted], opened: Any
) -> None:
    expected = catalog[name]
    got = _row_dicts(opened(name))
    problems = []
    for row in expected.rows:
        if row.seq not in got:
            if row.required:
                problems.append(f"seq {row.seq} (frame {row.frame}): missing")
            continue
        problems += [
            f"seq {row.seq} (frame {row.frame}) {d}" for d in _differences(row, got[row.seq])
        ]
    unexpected = set(got) - {r.seq for r in expected.rows}
    problems += [f"seq {s}: row that was never built" for s in sorted(unexpected)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", CAPTURES)
def test_rows_are_in_frame_order(name: str, opened: Any) -> None:
    frames = opened(name).packets.frame
    assert np.all(np.diff(frames) > 0)


@pytest.mark.parametrize("name", CAPTURES)
def test_stats_match_construction(
    name: str, catalog: dict[str, craft.Crafted], opened: Any
) -> None:
    expected = catalog[name]
    stats = opened(name).stats
    got = {key: getattr(stats, key) for key in expected.stats}
    assert got == expected.stats
    for key, least in expected.at_least.items():
        assert getattr(stats, key) >= least, key
    assert dict(stats.unknown_link_types) == expected.unknown_link_types


@pytest.mark.parametrize("name", CAPTURES)
def test_valid_capture_reports_no_errors(name: str, opened: Any) -> None:
    assert opened(name).errors == []


def test_microsecond_pcap_keeps_microseconds_and_nanosecond_pcap_keeps_nanoseconds(
    opened: Any,
) -> None:
    usec = opened("eth_le_usec.pcap").packets.ts_ns
    nsec = opened("eth_le_nsec.pcap").packets.ts_ns
    assert np.all(usec % 1000 == 0)
    assert np.any(nsec % 1000 != 0)
    # the recorder spaces frames 1.234567891 s apart from 1.7e18 ns
    assert int(nsec[0]) == 1_700_000_000_000_000_000


def test_byte_order_does_not_change_decoded_rows(opened: Any) -> None:
    """eth_le_nsec and eth_be_nsec differ only in byte order and sequence-number base."""
    le, be = opened("eth_le_nsec.pcap").packets, opened("eth_be_nsec.pcap").packets
    assert len(le) == len(be) > 0
    for name in ("frame", "ts_ns", "caplen", "flags", "window", "mss", "wscale", "tcp_checksum"):
        assert np.array_equal(le[name], be[name]), name
    assert np.array_equal(be.seq.astype(np.int64) - le.seq, np.full(len(le), 1_000_000))


@pytest.mark.parametrize(
    ("compressed", "plain"),
    [
        ("eth_le_usec.pcap.gz", "eth_le_usec.pcap"),
        ("eth_be_nsec.pcap.zst", "eth_be_nsec.pcap"),
        ("multi_section.pcapng.gz", "multi_section.pcapng"),
        ("multi_section.pcapng.zst", "multi_section.pcapng"),
    ],
)
def test_compressed_capture_decodes_like_the_plain_file(
    compressed: str, plain: str, opened: Any
) -> None:
    a, b = opened(compressed).packets.to_arrow(), opened(plain).packets.to_arrow()
    assert a.num_rows == b.num_rows > 0
    assert a.equals(b)


def test_files_are_ordered_by_first_timestamp_and_frames_continue(
    catalog: dict[str, craft.Crafted], opened: Any
) -> None:
    early, late = catalog["split_b_early.pcap"], catalog["split_a_late.pcap"]
    cap = opened("split_a_late.pcap", "split_b_early.pcap")  # given late file first
    p = cap.packets
    want_seq = [r.seq for r in early.rows] + [r.seq for r in late.rows]
    assert p.seq.tolist() == want_seq
    assert p.frame.tolist() == [1, 2, 3, 4, 5, 6]
    assert p.ts_ns.tolist() == [r.ts_ns for r in early.rows] + [r.ts_ns for r in late.rows]
    first_file = {Path(cap.sources[int(f)].path).name for f in p.file[:3]}
    assert first_file == {"split_b_early.pcap"}
    assert cap.stats.frames == 6


def test_reassembled_datagram_takes_frame_and_time_of_completing_fragment(
    catalog: dict[str, craft.Crafted], opened: Any
) -> None:
    expected = {r.seq: r for r in catalog["frag_v4.pcap"].rows if r.fragmented}
    p = opened("frag_v4.pcap").packets
    got = {
        int(s): (int(f), int(t))
        for s, f, t, fr in zip(p.seq, p.frame, p.ts_ns, p.fragmented, strict=True)
        if fr
    }
    # in order: the last fragment (frame 4); reversed: the first fragment (frame 7);
    # shuffled [2, 0, 3, 1]: the fourth to arrive (frame 11)
    assert {s: r.frame for s, r in expected.items()} == {9_000_001: 4, 9_000_002: 7, 9_000_003: 11}
    assert got == {s: (r.frame, r.ts_ns) for s, r in expected.items()}


def test_incomplete_datagram_yields_no_row(opened: Any) -> None:
    p = opened("frag_v4.pcap").packets
    assert 9_000_004 not in p.seq.tolist()
    p6 = opened("frag_v6.pcap").packets
    assert 9_000_014 not in p6.seq.tolist()


def test_identical_overlapping_ipv4_fragments_rebuild_the_datagram(
    catalog: dict[str, craft.Crafted], opened: Any
) -> None:
    row = next(r for r in catalog["frag_v4_overlap.pcap"].rows if r.required)
    cap = opened("frag_v4_overlap.pcap")
    got = _row_dicts(cap)
    assert row.seq in got
    assert _differences(row, got[row.seq]) == []


def test_tso_total_length_zero_takes_length_from_the_frame(opened: Any) -> None:
    p = opened("tso.pcap").packets
    assert p.payload_len.tolist() == [4000, 4001, 4002, 6]
    assert p.payload_caplen.tolist() == [4000, 4001, 4002, 6]


def test_ipv6_jumbogram_payload_length_comes_from_the_jumbo_option(opened: Any) -> None:
    p = opened("ipv6_jumbo.pcap").packets
    assert p.payload_len.tolist() == [70_000, 0]
    assert int(p.payload_caplen[0]) == 70_000


def test_routing_header_checksum_uses_final_destination(
    catalog: dict[str, craft.Crafted], opened: Any
) -> None:
    p = opened("ipv6_ext.pcap").packets
    verdicts = dict(zip(p.seq.tolist(), p.tcp_checksum.tolist(), strict=True))
    # built with segments left > 0: their checksums are only right for the final destination
    for seq in (8_000_002, 8_000_004, 8_000_005, 8_000_006):
        assert verdicts[seq] == tcpweave.Checksum.OK, seq
    assert verdicts[8_000_020] == tcpweave.Checksum.BAD


def test_truncated_packet_has_unknown_checksum_and_short_payload(opened: Any) -> None:
    p = opened("truncated.pcap").packets
    by_seq = {int(s): i for i, s in enumerate(p.seq)}
    cut = by_seq[10_000_000]
    assert (int(p.caplen[cut]), int(p.wirelen[cut])) == (80, 14 + 20 + 20 + 300)
    assert (int(p.payload_len[cut]), int(p.payload_caplen[cut])) == (300, 26)
    assert p.tcp_checksum[cut] == tcpweave.Checksum.UNKNOWN
    # built with a bad checksum, but cut short: it cannot be verified
    assert p.tcp_checksum[by_seq[10_000_003]] == tcpweave.Checksum.UNKNOWN
    # exactly filling the snap length is not truncation
    edge = by_seq[10_000_004]
    assert p.tcp_checksum[edge] == tcpweave.Checksum.OK
    assert int(p.payload_caplen[edge]) == 26


def test_ethernet_padding_is_not_payload(opened: Any) -> None:
    p = opened("eth_le_usec.pcap").packets
    pure_ack = int(np.flatnonzero(p.seq == 1_000_001)[0])
    assert int(p.caplen[pure_ack]) == 60
    assert int(p.payload_len[pure_ack]) == 0
    assert int(p.payload_caplen[pure_ack]) == 0


def test_ipv6_has_no_header_checksum(opened: Any) -> None:
    p = opened("linktype_ipv6.pcap").packets
    assert len(p) == 4
    assert set(p.ip_checksum.tolist()) == {tcpweave.Checksum.NONE}


def test_unknown_link_type_frames_are_counted_not_decoded(opened: Any) -> None:
    cap = opened("unknown_linktype.pcap")
    assert len(cap.packets) == 0
    assert cap.stats.frames == 3
    assert dict(cap.stats.unknown_link_types) == {craft.LINKTYPE_USER0: 3}


def test_pcapng_spb_and_opb_packets_are_decoded(
    catalog: dict[str, craft.Crafted], opened: Any
) -> None:
    p = opened("multi_section.pcapng").packets
    # frames 3 (OPB), 5 and 9 (SPB); frame 4 is on the unknown link type
    assert {3, 5, 9} <= set(p.frame.tolist())
    assert 4 not in p.frame.tolist()
    assert len(p) == len(catalog["multi_section.pcapng"].rows) == 10


def test_pcapng_timestamps_honour_tsresol_and_tsoffset(
    catalog: dict[str, craft.Crafted], opened: Any
) -> None:
    want = {r.frame: r.ts_ns for r in catalog["multi_section.pcapng"].rows if r.ts_ns is not None}
    p = opened("multi_section.pcapng").packets
    got = {int(f): int(t) for f, t in zip(p.frame, p.ts_ns, strict=True) if int(f) in want}
    assert got == want


def test_address_strings_are_printed_forms(opened: Any) -> None:
    p = opened("raw_ip.pcap").packets
    assert p.address_strings("src") == [
        "10.0.0.1",
        "2001:db8::1",
        "10.0.0.1",
        "10.0.0.1",
        "2001:db8::1",
    ]
    v4 = int(np.flatnonzero(p.ip_version == 4)[0])
    assert bytes(p.src[v4]) == ipaddress.IPv6Address("::ffff:10.0.0.1").packed


def test_to_arrow_exposes_every_packet_column(opened: Any) -> None:
    table = opened("vlan.pcap").packets.to_arrow()
    assert tuple(table.column_names) == tcpweave.PACKET_COLUMN_NAMES
    assert table.num_rows == 5


def test_capture_works_as_context_manager(catalog: dict[str, craft.Crafted]) -> None:
    with tcpweave.open(catalog["vlan.pcap"].path) as cap:
        assert len(cap.packets) == 5


# --------------------------------------------------------------------------- craft itself


def test_internet_checksum_matches_rfc1071_example() -> None:
    # RFC 1071 §3: words 0001 f203 f4f5 f6f7 sum to ddf2; the checksum is its complement
    assert craft.internet_checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0xFFFF - 0xDDF2


def test_bad_checksum_is_never_the_good_one() -> None:
    for good in (0x0000, 0xFFFF, 0x5555, 0x1234):
        assert craft._verdict(craft._checksum_value("bad", good), good) == craft.BAD


def test_interface_refuses_timestamps_its_resolution_cannot_hold() -> None:
    assert craft.Interface(1, tsresol=0x80 | 10).ticks(1_953_125) == 2
    with pytest.raises(ValueError):
        craft.Interface(1, tsresol=0x80 | 10).ticks(1_000_000)
    with pytest.raises(ValueError):
        craft.Interface(1).ticks(1_500)


TSHARK = shutil.which("tshark")
needs_tshark = pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")
TSHARK_VERDICT = {craft.OK: "1", craft.BAD: "0", craft.UNKNOWN: "2"}


def _tshark(path: Path, *fields: str) -> tuple[list[list[str]], str]:
    assert TSHARK is not None
    args = [
        TSHARK,
        "-n",
        "-r",
        str(path),
        "-o",
        "tcp.check_checksum:TRUE",
        "-o",
        "ip.check_checksum:TRUE",
        "-T",
        "fields",
    ]
    for f in fields:
        args += ["-e", f]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    noise = ('Running as user "root"',)
    err = "\n".join(x for x in done.stderr.splitlines() if not x.startswith(noise))
    assert done.returncode == 0, err
    return [line.split("\t") for line in done.stdout.splitlines()], err


@needs_tshark
@pytest.mark.parametrize("name", CAPTURES)
def test_tshark_reads_crafted_capture_without_complaint(
    name: str, catalog: dict[str, craft.Crafted]
) -> None:
    lines, err = _tshark(catalog[name].path, "frame.number", "_ws.malformed")
    assert err == ""
    assert len(lines) == catalog[name].frames
    assert [x for x in lines if x[1]] == []


@needs_tshark
@pytest.mark.parametrize("name", CAPTURES)
def test_tshark_sees_the_built_tcp_rows_and_checksum_verdicts(
    name: str, catalog: dict[str, craft.Crafted]
) -> None:
    crafted = catalog[name]
    if not crafted.tshark_tcp:
        pytest.skip(f"{name}: tshark does not dissect this link type's TCP (by design)")
    fields = ("frame.number", "tcp.seq_raw", "tcp.checksum.status", "ip.checksum.status")
    lines, _ = _tshark(crafted.path, *fields)
    seen = {int(x[0]): x for x in lines if x[1]}
    assert set(seen) == {r.frame for r in crafted.rows}
    for r in crafted.rows:
        frame, seq, tcp_status, ip_status = seen[r.frame]
        assert int(seq.split(",")[-1]) == r.seq
        if r.tcp_checksum is not None:
            assert tcp_status == TSHARK_VERDICT[r.tcp_checksum], f"frame {frame}"
        if r.ip_version == 4 and not r.fragmented:
            assert ip_status.split(",")[0] == TSHARK_VERDICT[r.ip_checksum], f"frame {frame}"
