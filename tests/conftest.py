"""Shared fixtures: where the public corpus lives and which captures it holds."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORPUS = Path(os.environ.get("TCPWEAVE_CORPUS", ROOT.parent / "shared" / "corpus"))
#: why the corpus tests skip, and how to get the corpus
NO_CORPUS = (
    f"corpus not found at {CORPUS}: scripts/fetch-corpus.py assembles it there "
    "(or set TCPWEAVE_CORPUS to where it is)"
)
CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".pcap.gz", ".pcapng.gz", ".pcap.zst")


def corpus_captures() -> list[Path]:
    """Every capture file in the shared corpus (empty when the corpus is absent)."""
    if not CORPUS.is_dir():
        return []
    return sorted(
        p
        for p in CORPUS.rglob("*")
        if p.is_file() and p.name.endswith(CAPTURE_SUFFIXES) and "expected_tshark" not in p.parts
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Without the corpus, tests parametrized over its captures have no parameters: give
    them the reason (pytest's own says only "got empty parameter set")."""
    if CORPUS.is_dir():
        return
    for item in items:
        reasons = (str(m.kwargs.get("reason", "")) for m in item.iter_markers("skip"))
        if any(r.startswith("got empty parameter set") for r in reasons):
            item.add_marker(pytest.mark.skip(reason=NO_CORPUS), append=False)


@pytest.fixture(scope="session")
def corpus() -> Path:
    if not CORPUS.is_dir():
        pytest.skip(NO_CORPUS)
    return CORPUS


def stream_tree(root: Path) -> dict[str, str]:
    """sha256 of every file an extraction wrote under ``root`` (relative path -> digest),
    without tcpweave's own area (.tcpweave/) and the manifest, which names times and paths."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
        and ".tcpweave" not in p.relative_to(root).parts
        and p.name != "manifest.json"
    }
