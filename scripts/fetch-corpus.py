#!/usr/bin/env python3
"""Assemble the corpus of public captures that tcpweave's differential tests read.

The corpus is made of test captures of three public projects (Suricata's
suricata-verify, tcpdump and Zeek), each with the expectation files its project keeps
beside it, and, for every capture, the view TShark gives of it
(``expected_tshark/<path with / as __>.streams.tsv``). ``tests/data/corpus-sources.json``
lists every file: its place in the corpus, its upstream repository, commit and path, its
size and SHA-256.

    scripts/fetch-corpus.py [--dest DIR]          download, verify, write the tshark views
    scripts/fetch-corpus.py sources MANIFEST.md   rewrite corpus-sources.json from a
                                                  corpus directory and its MANIFEST.md

``fetch`` (the default) downloads each file from
``<base-url>/<owner>/<repo>/<commit>/<path>`` (base: https://raw.githubusercontent.com),
checks its size and SHA-256 and only then moves it into place; a file already present
with the right digest is not fetched again. When ``tshark`` is on PATH the stored views
are regenerated with the command recorded in the sources file and checked against the
digests recorded there (made with the TShark version named there: another version may
differ, and the script says so). It prints one line per file that failed, saying why, and
exits 1 when any did; 0 when the corpus is complete. Standard library only.

The destination is ``--dest``, else ``$TCPWEAVE_CORPUS``, else ``../shared/corpus``
beside this checkout: where the tests look (tests/conftest.py).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ROOT / "tests" / "data" / "corpus-sources.json"
BASE_URL = "https://raw.githubusercontent.com"
VIEWS = "expected_tshark"


def default_dest() -> Path:
    env = os.environ.get("TCPWEAVE_CORPUS")
    return Path(env) if env else ROOT.parent / "shared" / "corpus"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------- fetch


@dataclass(frozen=True)
class Failure:
    path: str
    reason: str


def url_of(entry: dict, repos: dict, base_url: str) -> str:
    repo = repos[entry["source"]]
    return f"{base_url.rstrip('/')}/{repo['repo']}/{repo['commit']}/{entry['upstream']}"


def fetch_file(entry: dict, repos: dict, dest: Path, base_url: str, timeout: float) -> str | None:
    """Download one file into ``dest`` after checking it; None when done, else why not."""
    target = dest / entry["path"]
    if target.is_file() and check(target, entry) is None:
        return None
    url = url_of(entry, repos, base_url)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, part = tempfile.mkstemp(dir=target.parent, prefix=".fetch-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as got:
            shutil.copyfileobj(got, out)
        problem = check(Path(part), entry)
        if problem is not None:
            return f"{problem} ({url})"
        os.replace(part, target)
        return None
    except (urllib.error.URLError, OSError, ValueError) as e:  # HTTPError is a URLError
        return f"download failed: {e} ({url})"
    finally:
        if os.path.exists(part):
            os.unlink(part)


def check(path: Path, entry: dict) -> str | None:
    size = path.stat().st_size
    if size != entry["size"]:
        return f"size {size} B, expected {entry['size']} B"
    digest = sha256_of(path)
    if digest != entry["sha256"]:
        return f"sha256 {digest}, expected {entry['sha256']}"
    return None


def tshark_version(tshark: str) -> str:
    first = subprocess.run([tshark, "--version"], capture_output=True, text=True).stdout
    m = re.search(r"TShark \(Wireshark\) (\S+)", first)
    return m.group(1).rstrip(".") if m else "unknown"


def write_view(view: dict, sources: dict, dest: Path, tshark: str) -> str | None:
    """Regenerate one stored tshark view; None when it matches the recorded digest."""
    capture = dest / view["capture"]
    if not capture.is_file():
        return f"capture {view['capture']} missing, view not made"
    argv = [tshark if a == "tshark" else a for a in sources["tshark"]["argv"]]
    argv = [str(capture) if a == "{capture}" else a for a in argv]
    done = subprocess.run(argv, capture_output=True, timeout=600)
    if done.returncode != 0:
        return f"tshark exit {done.returncode}: {done.stderr.decode(errors='replace')[:200]}"
    target = dest / view["path"]
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(done.stdout)
    digest = hashlib.sha256(done.stdout).hexdigest()
    if digest != view["sha256"]:
        return f"differs from the view recorded with TShark {sources['tshark']['version']}"
    return None


def fetch(sources: dict, dest: Path, base_url: str, tshark: str | None, timeout: float) -> int:
    repos = sources["repositories"]
    failures = []
    for entry in sources["files"]:
        why = fetch_file(entry, repos, dest, base_url, timeout)
        if why is not None:
            failures.append(Failure(entry["path"], why))
    fetched = len(sources["files"]) - len(failures)
    print(f"{fetched} of {len(sources['files'])} files in {dest}")
    if tshark is None:
        print(f"tshark not found: {VIEWS}/ not written (the tests that read it skip)")
    else:
        version = tshark_version(tshark)
        if version != sources["tshark"]["version"]:
            print(f"note: tshark {version}; the views were recorded with "
                  f"{sources['tshark']['version']}")  # fmt: skip
        before = len(failures)
        for view in sources["tshark_views"]:
            why = write_view(view, sources, dest, tshark)
            if why is not None:
                failures.append(Failure(view["path"], why))
        made = len(sources["tshark_views"]) - (len(failures) - before)
        print(f"{made} of {len(sources['tshark_views'])} tshark views made with tshark {version}")
    for f in failures:
        print(f"FAILED {f.path}: {f.reason}", file=sys.stderr)
    if failures:
        print(f"{len(failures)} file(s) failed; the corpus is incomplete", file=sys.stderr)
    return 1 if failures else 0


# -------------------------------------------------------------------------- sources


ENTRY = re.compile(r"^### (\S+)\n(.*?)(?=^### |^## |\Z)", re.MULTILINE | re.DOTALL)
REPO_ROW = re.compile(r"^\| (\S+)/ \| (\S+/\S+) \| ([0-9a-f]{40}) \| (.+?) \|$", re.MULTILINE)
FIELD = re.compile(r"^- ([a-z ]+): (.*)$", re.MULTILINE)
#: suricata-verify expectation files copied from another test that reuses the capture
#: carry that test's name as a prefix (MANIFEST.md, "Layout")
OTHER_TEST = re.compile(r"^(.+)\.(test\.yaml|test\.rules|suricata\.yaml|README\.md)$")
#: the one file whose upstream test the file name does not say (MANIFEST.md: the
#: tcp-data.log of test output-tcp-data, kept beside lua-output-http's capture)
MOVED = {
    "suricata-verify/lua-output-http/expected/tcp-data.log": (
        "tests/output-tcp-data/expected/tcp-data.log"
    ),
}


def upstream_path(path: str) -> str:
    """Where a corpus file (not a capture: those are named in MANIFEST.md) sits upstream."""
    if path in MOVED:
        return MOVED[path]
    source, rest = path.split("/", 1)
    if source == "suricata-verify":
        name = os.path.basename(rest)
        m = OTHER_TEST.match(name)
        return f"tests/{m.group(1)}/{m.group(2)}" if m else f"tests/{rest}"
    if source == "tcpdump":
        return f"tests/{rest}"
    if source == "zeek" and "/Baseline/" in f"/{rest}":
        return "testing/btest/Baseline/" + rest.split("Baseline/", 1)[1]
    raise ValueError(f"no rule gives the upstream path of {path}")


def parse_manifest(text: str) -> tuple[dict, list[dict]]:
    repos = {m[0]: {"repo": m[1], "commit": m[2], "licence": m[3]} for m in REPO_ROW.findall(text)}
    captures = []
    for path, body in ENTRY.findall(text):
        fields = dict(FIELD.findall(body))
        up = re.match(r"(\S+) `([^`]+)` @ ([0-9a-f]+)", fields["upstream"])
        size = re.match(r"(\d+) B; sha256 ([0-9a-f]+)", fields["size"])
        if up is None or size is None:
            raise ValueError(f"MANIFEST entry {path}: cannot read upstream or size")
        source = path.split("/", 1)[0]
        if repos[source]["repo"] != up[1] or not repos[source]["commit"].startswith(up[3]):
            raise ValueError(f"MANIFEST entry {path}: upstream {up[1]}@{up[3]} is not {source}'s")
        captures.append({
            "path": path,
            "upstream": up[2],
            "size": int(size[1]),
            "sha256_prefix": size[2],
            "format": fields.get("format", ""),
            "covers": fields.get("covers", ""),
            "outcome": fields.get("stated outcome", ""),
            "beside": re.findall(r"`([^`]+)`", fields.get("beside it", "")),
            "tshark_view": re.findall(r"`([^`]+)`", fields.get("tshark view", "")),
        })  # fmt: skip
    return repos, captures


def build_sources(manifest: Path) -> dict:
    """The sources file for the corpus in ``manifest``'s directory (its files hashed)."""
    corpus = manifest.parent
    repos, captures = parse_manifest(manifest.read_text())
    files: dict[str, dict] = {}

    def add(path: str, upstream: str) -> None:
        local = corpus / path
        files[path] = {"path": path, "source": path.split("/", 1)[0], "upstream": upstream,
                       "size": local.stat().st_size, "sha256": sha256_of(local)}  # fmt: skip

    for c in captures:
        add(c["path"], c["upstream"])
        entry = files[c["path"]]
        if entry["size"] != c["size"] or not entry["sha256"].startswith(c["sha256_prefix"]):
            raise ValueError(f"{c['path']}: local copy does not match MANIFEST.md")
        for b in c["beside"]:
            add(b, upstream_path(b))
    if (corpus / "tcpdump" / "TESTLIST").is_file():
        add("tcpdump/TESTLIST", "tests/TESTLIST")  # the options of each tcpdump test
    views = [{"path": v, "capture": c["path"], "sha256": sha256_of(corpus / v)}
             for c in captures for v in c["tshark_view"]]  # fmt: skip
    known = set(files) | {v["path"] for v in views} | {"MANIFEST.md"}
    unknown = sorted(str(p.relative_to(corpus)) for p in corpus.rglob("*") if p.is_file())
    unknown = [p for p in unknown if p not in known]
    if unknown:
        raise ValueError(f"files of the corpus with no source: {unknown}")
    tshark = re.search(r"\*\*TShark \(Wireshark\) (\S+)\*\*", manifest.read_text())
    command = re.search(r"The TSV is `(tshark [^`]+)`", manifest.read_text())
    if command is None:
        raise ValueError("MANIFEST.md does not give the tshark command of the views")
    argv = ["{capture}" if a == "F" else a for a in command.group(1).split()]
    listed = [{k: v for k, v in c.items() if k not in ("size", "upstream")} for c in captures]
    return {
        "about": "Files of the tcpweave test corpus and their public sources; written by "
        "scripts/fetch-corpus.py sources from the corpus MANIFEST.md.",
        "repositories": repos,
        "tshark": {"version": tshark.group(1) if tshark else "unknown", "argv": argv},
        "captures": listed,
        "files": sorted(files.values(), key=lambda f: f["path"]),
        "tshark_views": views,
    }


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Download tcpweave's test corpus from its public sources and verify it.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="sources MANIFEST.md: rewrite --sources from a corpus and its MANIFEST.md.",
    )
    parser.add_argument("command", nargs="?", default="fetch", choices=["fetch", "sources"])
    parser.add_argument("manifest", nargs="?", type=Path, help="(sources) the MANIFEST.md")
    parser.add_argument(
        "--dest",
        type=Path,
        default=None,
        help="corpus directory (default: $TCPWEAVE_CORPUS, else ../shared/corpus)",
    )
    parser.add_argument("--sources", type=Path, default=SOURCES, help="the sources file")
    parser.add_argument(
        "--base-url",
        default=BASE_URL,
        help="where <owner>/<repo>/<commit>/<path> is served (http, https, file)",
    )
    parser.add_argument(
        "--tshark",
        default=shutil.which("tshark"),
        help="tshark to regenerate the views with (default: from PATH)",
    )
    parser.add_argument("--no-tshark", action="store_true", help="do not write the views")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per download")
    args = parser.parse_args(argv)  # fmt: skip
    if args.command == "sources":
        if args.manifest is None:
            parser.error("sources needs the MANIFEST.md of a corpus")
        text = json.dumps(build_sources(args.manifest), indent=1, ensure_ascii=False)
        args.sources.write_text(text + "\n")
        print(f"wrote {args.sources}")
        return 0
    sources = json.loads(args.sources.read_text())
    dest = args.dest or default_dest()
    tshark = None if args.no_tshark else args.tshark
    return fetch(sources, dest, args.base_url, tshark, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
