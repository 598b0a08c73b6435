"""Regenerate the follow-stream oracle data in this directory.

For each small crafted scenario this writes ``<name>.pcap`` (built with the
independent builders of ``tests/craft.py``), then asks tshark for

* ``<name>.streams.tsv``: ``tshark -r F -T fields -e frame.number -e tcp.stream
  -e tcp.seq_raw -e tcp.len -Y tcp`` (the format of the corpus' expected_tshark files);
* ``<name>.<mode>.<stream>.txt`` for mode in ascii, hex, raw, yaml: the standard
  output of ``tshark -r F -q -z follow,tcp,<mode>,<stream>``, byte for byte.

The outputs were produced with TShark 4.0.17 and default preferences; the
rules they show are written down in docs/wireshark-follow-tcp.md and
docs/wireshark-tcp-stream.md. Run: ``.venv/bin/python tests/data/follow/make_follow_data.py``
(``--check`` compares with the stored files instead of writing them).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # tests/, for craft.py

from craft import (  # noqa: E402
    ACK,
    FIN,
    LINKTYPE_ETHERNET,
    PSH,
    RST,
    SYN,
    Tcp,
    ethernet,
    ipv4,
    ipv6,
    write_pcap,
)

MODES = ("ascii", "hex", "raw", "yaml")
T0_NS = 1_700_000_000 * 1_000_000_000
STEP_NS = 1_000_000  # one packet per millisecond

V4_CLIENT, V4_SERVER = "10.0.0.1", "10.0.0.2"
V6_CLIENT, V6_SERVER = "2001:db8::1", "2001:db8::2"
CPORT, SPORT = 1234, 80
CISN, SISN = 1000, 5000  # client and server initial sequence numbers

# (source address, destination address, segment)
Seg = tuple[str, str, Tcp]


class Conn:
    """One client/server pair; builds segments in either direction."""

    def __init__(self, client: str, server: str, cport: int = CPORT, sport: int = SPORT) -> None:
        self.client, self.server, self.cport, self.sport = client, server, cport, sport

    def c(
        self,
        seq: int,
        payload: bytes = b"",
        flags: int = PSH | ACK,
        ack: int = SISN + 1,
        checksum: str = "good",
    ) -> Seg:
        tcp = Tcp(self.cport, self.sport, seq, ack, flags, payload=payload, checksum=checksum)
        return self.client, self.server, tcp

    def s(
        self,
        seq: int,
        payload: bytes = b"",
        flags: int = PSH | ACK,
        ack: int = CISN + 1,
        checksum: str = "good",
    ) -> Seg:
        tcp = Tcp(self.sport, self.cport, seq, ack, flags, payload=payload, checksum=checksum)
        return self.server, self.client, tcp

    def handshake(self, cisn: int = CISN, sisn: int = SISN) -> list[Seg]:
        return [
            self.c(cisn, flags=SYN, ack=0),
            self.s(sisn, flags=SYN | ACK, ack=cisn + 1),
            self.c(cisn + 1, flags=ACK, ack=sisn + 1),
        ]


V4 = Conn(V4_CLIENT, V4_SERVER)
V6 = Conn(V6_CLIENT, V6_SERVER)


def scenarios() -> dict[str, tuple[list[Seg], tuple[int, ...]]]:
    """name -> (segments in capture order, stream indexes to follow)."""
    c, s, hs = V4.c, V4.s, V4.handshake
    out: dict[str, tuple[list[Seg], tuple[int, ...]]] = {}

    # in order, both directions, CR LF and non-printable bytes, two server segments in a row
    out["in_order"] = (
        [
            *hs(),
            c(1001, b"GET / HTTP/1.0\r\n\r\n"),
            s(5001, b"HTTP/1.0 200 OK\r\n", ack=1019),
            s(5018, b"\x00\x01\x02\t\x7f\x80\xffbody\n", ack=1019),
            c(1019, b"bye", ack=5031),
            c(1022, flags=FIN | ACK, ack=5031),
            s(5031, flags=FIN | ACK, ack=1023),
            c(1023, flags=ACK, ack=5032),
        ],
        (0,),
    )
    # the second client segment arrives first; a server segment arrives in between
    out["out_of_order"] = (
        [
            *hs(),
            c(1006, b"BBBBB"),
            s(5001, b"srv1"),
            c(1001, b"AAAAA"),
            s(5005, b"srv2", ack=1011),
            c(1011, b"CCCCC", ack=5009),
        ],
        (0,),
    )
    # an exact retransmission, then a "retransmission" of the same range with other bytes
    out["retransmission"] = (
        [
            *hs(),
            c(1001, b"AAAAA"),
            c(1001, b"AAAAA"),
            c(1006, b"BBBBB"),
            c(1006, b"ZZZZZ"),
            c(1011, b"CCCCC"),
        ],
        (0,),
    )
    # in-order overlap with different bytes (first copy wins, the tail is cut off and
    # kept), then two out-of-order segments competing for the same range
    out["overlap_conflict"] = (
        [
            *hs(),
            c(1001, b"AAAAAAAAAA"),
            c(1006, b"XXXXXYYYYY"),
            c(1018, b"PPPP"),
            c(1017, b"QQQQQQ"),
            c(1016, b"R"),
        ],
        (0,),
    )
    # one hole per direction. The server's hole is never acknowledged past by the
    # client, so everything after it stays hidden; the client's hole is acknowledged
    # past by a server ACK, which makes follow insert a placeholder and go on.
    out["gap"] = (
        [
            *hs(),
            c(1001, b"AAAAA"),
            c(1011, b"CCCCC"),
            s(5001, b"srv1", ack=1006),
            s(5010, b"srv3", ack=1006),
            c(1016, b"DDDDD", ack=5005),
            s(5014, flags=ACK, ack=1021),
        ],
        (0,),
    )
    # one 4-tuple, three connections: a new ISN after FIN makes stream 1; the same
    # ISN again after RST stays in stream 1
    reuse = [
        *hs(),
        c(1001, b"first"),
        s(5001, b"one", ack=1006),
        c(1006, flags=FIN | ACK, ack=5004),
        s(5004, flags=FIN | ACK, ack=1007),
        c(1007, flags=ACK, ack=5005),
        *hs(2000, 6000),
        c(2001, b"second", ack=6001),
        s(6001, b"two", ack=2007),
        (V4_CLIENT, V4_SERVER, Tcp(CPORT, SPORT, 2007, 0, RST)),
        *hs(2000, 6000),
        c(2001, b"third", ack=6001),
    ]
    out["port_reuse"] = (reuse, (0, 1))
    out["ipv6"] = (
        [
            *V6.handshake(),
            V6.c(1001, b"v6 request\n"),
            V6.s(5001, b"v6 reply\n", ack=1012),
            V6.c(1012, flags=FIN | ACK, ack=5010),
        ],
        (0,),
    )
    out["pure_ack_only"] = (
        [*hs(), c(1001, flags=FIN | ACK), s(5001, flags=FIN | ACK, ack=1002)],
        (0,),
    )
    # data on SYN and SYN-ACK, data on RST, data after FIN (FIN does not advance follow)
    out["syn_fin_rst_data"] = (
        [
            c(1000, b"syn-data", flags=SYN, ack=0),
            s(5000, b"sa", flags=SYN | ACK, ack=1009),
            c(1009, b"AAAAA", ack=5003),
            c(1014, flags=FIN | ACK, ack=5003),
            c(1014, b"after-fin", ack=5003),
            s(5003, b"rst-data", flags=RST | ACK, ack=1023),
            s(5011, b"after-rst", ack=1023),
        ],
        (0,),
    )
    # a segment with a bad TCP checksum is followed like any other (default preferences)
    out["bad_checksum"] = (
        [
            *hs(),
            c(1001, b"AAAAA"),
            c(1006, b"BAD!!", checksum="bad"),
            c(1006, b"GOOD!"),
            c(1011, b"CCCCC"),
        ],
        (0,),
    )
    return out


def write_capture(path: Path, segs: list[Seg]) -> None:
    frames = []
    for i, (src, dst, tcp) in enumerate(segs):
        ip = ipv6(src, dst, tcp) if ":" in src else ipv4(src, dst, tcp, ident=i + 1, df=True)
        frames.append((T0_NS + i * STEP_NS, ethernet(ip), None))
    write_pcap(path, frames, LINKTYPE_ETHERNET)


def tshark(*args: str) -> bytes:
    return subprocess.run(["tshark", *args], capture_output=True, check=True).stdout


def outputs(pcap: Path, streams: tuple[int, ...]) -> dict[str, bytes]:
    name = pcap.stem
    out = {
        f"{name}.streams.tsv": tshark(
            "-r",
            str(pcap),
            "-T",
            "fields",
            "-e",
            "frame.number",
            "-e",
            "tcp.stream",
            "-e",
            "tcp.seq_raw",
            "-e",
            "tcp.len",
            "-Y",
            "tcp",
        )
    }
    for stream in streams:
        for mode in MODES:
            out[f"{name}.{mode}.{stream}.txt"] = tshark(
                "-r", str(pcap), "-q", "-z", f"follow,tcp,{mode},{stream}"
            )
    return out


def main(check: bool = False) -> int:
    bad = 0
    for name, (segs, streams) in scenarios().items():
        pcap = HERE / f"{name}.pcap"
        if check:
            tmp = HERE / f".{name}.check.pcap"
            write_capture(tmp, segs)
            same = tmp.read_bytes() == pcap.read_bytes()
            tmp.unlink()
            if not same:
                print(f"{pcap.name}: differs")
                bad += 1
        else:
            write_capture(pcap, segs)
        for fname, data in outputs(pcap, streams).items():
            target = HERE / fname
            if check:
                if not target.exists() or target.read_bytes() != data:
                    print(f"{fname}: differs")
                    bad += 1
            else:
                target.write_bytes(data)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(check="--check" in sys.argv[1:]))
