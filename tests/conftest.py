"""Shared fixtures: where the public corpus lives and which captures it holds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORPUS = Path(os.environ.get("TCPWEAVE_CORPUS", ROOT.parent / "shared" / "corpus"))
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


@pytest.fixture(scope="session")
def corpus() -> Path:
    if not CORPUS.is_dir():
        pytest.skip(f"shared corpus not found at {CORPUS}")
    return CORPUS
