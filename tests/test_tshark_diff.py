"""Differential test: tcpweave's packet table against tshark's TCP fields.

For every TCP packet of every corpus capture and of the project's own
captures: frame number, timestamp (ns), addresses, ports, raw seq/ack, flags,
TCP payload length and TCP checksum status (tshark with checksum validation
on) must be equal. Frames tshark shows as TCP that tcpweave rightly does not
(ICMP-quoted headers, tunnels) are named by ``tshark_rows``; any other
disagreement must be listed in ``EXPECTED`` with its reason, and is checked to
be exactly that disagreement.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import CORPUS, NO_CORPUS, ROOT, corpus_captures
from tshark_oracle import TSHARK, first_difference, tcpweave_rows, tshark_rows

pytestmark = pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")

#: capture (relative to the corpus) -> {frame: (field, tcpweave value, tshark value, reason)}
EXPECTED: dict[str, dict[int, tuple[str, object, object, str]]] = {
    "zeek/ipv4/fragmented-4.pcap": {
        5: (
            "tcp_checksum",
            "ok",
            "bad",
            "overlapping IPv4 fragments with conflicting bytes: tshark takes the overlap from "
            "the fragment with the lower offset, tcpweave keeps the bytes that arrived first "
            "(and reports the conflict); with tcpweave's bytes the TCP checksum verifies",
        )
    },
}


def _own_captures() -> list[Path]:
    return sorted((ROOT / "examples").glob("*.pcap*"))


def _compare(path: Path, key: str) -> None:
    theirs, skipped = tshark_rows(path)
    ours = tcpweave_rows(path)
    ours_by_frame = {r.frame: r for r in ours}
    for frame in skipped:  # shown by tshark as TCP for a named reason: tcpweave has no row
        assert frame not in ours_by_frame, (frame, skipped[frame])
    for frame, (field, our_value, their_value, reason) in EXPECTED.get(key, {}).items():
        o = ours_by_frame[frame]
        t = next(r for r in theirs if r.frame == frame)
        assert (getattr(o, field), getattr(t, field)) == (our_value, their_value), reason
        theirs = [r if r.frame != frame else o for r in theirs]
    assert first_difference(ours, theirs) is None


@pytest.mark.parametrize("path", corpus_captures(), ids=lambda p: str(p.relative_to(CORPUS)))
def test_corpus_capture_matches_tshark(path: Path) -> None:
    _compare(path, str(path.relative_to(CORPUS)))


@pytest.mark.parametrize("path", _own_captures(), ids=lambda p: p.name)
def test_own_capture_matches_tshark(path: Path) -> None:
    _compare(path, path.name)


def test_crafted_captures_match_tshark(tmp_path: Path) -> None:
    craft = pytest.importorskip("craft")
    built = craft.build_all(tmp_path)
    assert built, "the crafted set is empty"
    failures = []
    for name, path in sorted(built.items()):
        try:
            _compare(Path(path), f"crafted/{name}")
        except AssertionError as exc:
            failures.append(f"{name}: {exc}")
    assert not failures, "\n".join(failures)


def test_every_expected_difference_names_a_corpus_capture() -> None:
    if not CORPUS.is_dir():
        pytest.skip(NO_CORPUS)
    for key in EXPECTED:
        assert (CORPUS / key).is_file(), key
