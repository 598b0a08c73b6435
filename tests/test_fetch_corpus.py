"""scripts/fetch-corpus.py: the corpus is assembled from its public sources, and checked.

There is no network here, so the upstream repositories are played by a local HTTP server
(``http.server`` on 127.0.0.1) serving a directory laid out as raw.githubusercontent.com
is: ``<owner>/<repo>/<commit>/<path>``. The files it serves are copies of the corpus files
(when the corpus is present) or made up; the checks the script makes are the real ones.
The oracles: the corpus's MANIFEST.md (upstream paths, sizes, digest prefixes), the files
of the corpus themselves, and TShark (the stored views).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import shutil
import sys
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType

import pytest

from conftest import CORPUS, ROOT


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fetch_corpus", ROOT / "scripts/fetch-corpus.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


fc = _load()
SOURCES = json.loads(fc.SOURCES.read_text())
TSHARK = shutil.which("tshark")
#: a few real corpus files of each kind: pcap, gzip pcap, pcapng, yaml, tcpdump .out,
#: a Zeek baseline that is a dot file, and an expectation copied from another test
SAMPLE = [
    "suricata-verify/eve-payload-05-tcp-data-gap/tcp-simple-gap2.pcap",
    "suricata-verify/eve-payload-05-tcp-data-gap/test.yaml",
    "suricata-verify/http-gap-beyond-body/eve-payload-07-http-gap.test.yaml",
    "tcpdump/dns_tcp.pcap",
    "tcpdump/dns_tcp.out",
    "zeek/http/iso-download.pcap.gz",
    "zeek/tcp/http-on-irc-port-missing-syn.pcapng",
    "zeek/tcp/Baseline/core.tcp.quantum-insert/.stdout",
]


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """(directory served, its base URL)."""
    root = tmp_path / "upstream"
    root.mkdir()
    handler = functools.partial(_Quiet, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _upstream_file(root: Path, sources: dict, entry: dict) -> Path:
    repo = sources["repositories"][entry["source"]]
    path = root / repo["repo"] / repo["commit"] / entry["upstream"]
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _made_up(tmp_path: Path) -> tuple[dict, dict[str, bytes]]:
    """Sources of three made-up files of one made-up repository, and their bytes."""
    data = {f"demo/d{i}/f{i}.pcap": bytes([i]) * (100 + i) for i in range(3)}
    files = [{"path": p, "source": "demo", "upstream": "tests/" + p.split("/", 1)[1],
              "size": len(b), "sha256": hashlib.sha256(b).hexdigest()}
             for p, b in data.items()]  # fmt: skip
    sources = {
        "repositories": {"demo": {"repo": "someone/demo", "commit": "0" * 40}},
        "tshark": SOURCES["tshark"],
        "files": files,
        "tshark_views": [],
    }
    return sources, data


def test_fetch_downloads_verifies_and_does_not_fetch_twice(
    mirror: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, url = mirror
    sources, data = _made_up(tmp_path)
    for entry in sources["files"]:
        _upstream_file(root, sources, entry).write_bytes(data[entry["path"]])
    dest = tmp_path / "corpus"
    assert fc.fetch(sources, dest, url, None, 10.0) == 0
    assert {p: (dest / p).read_bytes() for p in data} == data
    assert "3 of 3 files" in capsys.readouterr().out
    shutil.rmtree(root)  # upstream gone: what is in place and verified is kept
    assert fc.fetch(sources, dest, url, None, 10.0) == 0


def test_fetch_names_every_file_that_failed_and_why(
    mirror: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, url = mirror
    sources, data = _made_up(tmp_path)
    good, short, altered = sources["files"]
    _upstream_file(root, sources, good).write_bytes(data[good["path"]])
    _upstream_file(root, sources, short).write_bytes(data[short["path"]][:-1])
    altered_bytes = b"\xff" + data[altered["path"]][1:]
    _upstream_file(root, sources, altered).write_bytes(altered_bytes)
    missing = dict(good, path="demo/missing.pcap", upstream="tests/missing.pcap")
    sources["files"].append(missing)
    dest = tmp_path / "corpus"
    assert fc.fetch(sources, dest, url, None, 10.0) == 1
    err = capsys.readouterr().err
    assert f"FAILED {short['path']}: size {short['size'] - 1} B, expected {short['size']} B" in err
    assert f"FAILED {altered['path']}: sha256 {hashlib.sha256(altered_bytes).hexdigest()}" in err
    assert "FAILED demo/missing.pcap: download failed: HTTP Error 404" in err
    assert "3 file(s) failed; the corpus is incomplete" in err
    assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()) == [
        good["path"]
    ]  # nothing unverified, no partial download, is left in the corpus


def test_fetch_from_an_unreachable_source_says_so(tmp_path: Path) -> None:
    sources, _ = _made_up(tmp_path)
    assert fc.fetch(sources, tmp_path / "corpus", "http://127.0.0.1:9", None, 5.0) == 1


@pytest.fixture
def corpus_sample(corpus: Path) -> dict:
    """The sources of SAMPLE (and their tshark views), from the committed file."""
    files = [f for f in SOURCES["files"] if f["path"] in SAMPLE]
    views = [v for v in SOURCES["tshark_views"] if v["capture"] in SAMPLE]
    assert len(files) == len(SAMPLE)
    return dict(SOURCES, files=files, tshark_views=views)


def test_real_corpus_files_served_like_github_are_assembled(
    mirror: tuple[Path, str],
    tmp_path: Path,
    corpus_sample: dict,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root, url = mirror
    for entry in corpus_sample["files"]:
        shutil.copyfile(CORPUS / entry["path"], _upstream_file(root, corpus_sample, entry))
    dest = tmp_path / "corpus"
    assert fc.fetch(corpus_sample, dest, url, TSHARK, 10.0) == 0
    for entry in corpus_sample["files"]:
        assert (dest / entry["path"]).read_bytes() == (CORPUS / entry["path"]).read_bytes()
    if TSHARK is not None:  # TShark itself remade the views the tests compare with
        n = len(corpus_sample["tshark_views"])
        assert f"{n} of {n} tshark views made" in capsys.readouterr().out
        for view in corpus_sample["tshark_views"]:
            assert (dest / view["path"]).read_bytes() == (CORPUS / view["path"]).read_bytes()


@pytest.mark.skipif(TSHARK is None, reason="tshark not installed")
def test_a_view_that_tshark_does_not_reproduce_is_reported(
    tmp_path: Path, corpus_sample: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    capture = corpus_sample["files"][0]
    dest = tmp_path / "corpus"
    (dest / capture["path"]).parent.mkdir(parents=True)
    shutil.copyfile(CORPUS / capture["path"], dest / capture["path"])
    view = next(v for v in corpus_sample["tshark_views"] if v["capture"] == capture["path"])
    sources = dict(corpus_sample, files=[capture], tshark_views=[dict(view, sha256="0" * 64)])
    assert fc.fetch(sources, dest, "http://127.0.0.1:9", TSHARK, 5.0) == 1
    assert f"FAILED {view['path']}: differs from the view recorded with TShark" in (
        capsys.readouterr().err
    )


def test_sources_file_is_the_corpus_and_its_manifest(corpus: Path) -> None:
    """Rebuilt from the corpus's MANIFEST.md and files, the sources file is unchanged; so
    every corpus file is listed, with its size and digest."""
    assert fc.build_sources(corpus / "MANIFEST.md") == SOURCES


def test_upstream_path_rule_agrees_with_the_manifest() -> None:
    """The rule that places expectation files upstream gives, for the captures, the
    upstream paths MANIFEST.md states (Zeek captures live in Traces/, baselines not)."""
    stated = {f["path"]: f["upstream"] for f in SOURCES["files"]}
    for capture in SOURCES["captures"]:
        path = capture["path"]
        if not path.startswith("zeek/"):
            assert fc.upstream_path(path) == stated[path]
    assert fc.upstream_path("zeek/tcp/Baseline/core.tcp.options/out-27") == (
        "testing/btest/Baseline/core.tcp.options/out-27"
    )
    with pytest.raises(ValueError, match="no rule"):
        fc.upstream_path("zeek/tcp/unknown.pcap")


def test_command_line_fetches_into_dest(mirror: tuple[Path, str], tmp_path: Path) -> None:
    root, url = mirror
    sources, data = _made_up(tmp_path)
    for entry in sources["files"]:
        _upstream_file(root, sources, entry).write_bytes(data[entry["path"]])
    listing = tmp_path / "sources.json"
    listing.write_text(json.dumps(sources))
    dest = tmp_path / "corpus"
    argv = ["--sources", str(listing), "--dest", str(dest), "--base-url", url, "--no-tshark"]
    assert fc.main(argv) == 0
    assert {p: (dest / p).read_bytes() for p in data} == data
