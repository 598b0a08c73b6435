"""The README's examples are run, so that they cannot go stale.

Every ```console block of README.md is a session: lines that start with ``$ `` are
commands, the lines under a command up to the next one are what it prints (its standard
output, then its standard error). Each block runs in a fresh temporary directory that
holds a copy of ``examples/`` (the capture recorded for the README, see
examples/README.md), so a block may read ``examples/sample-http.pcap`` and write ``out/``.
A command is ``tcpweave ...`` (run as the installed entry point would run it) or one of a
few file-listing tools (``ls``, ``head``), never a shell.

The comparison is exact except for what must vary from run to run, and only that:

* trailing spaces at the end of a line (rich pads table titles; editors strip them);
* the wall-clock time in ``extract``'s summary (the ``time`` row);
* the temporary directory's absolute path, written ``TMP``.

Output is not a terminal here, so the CLI renders tables 200 columns wide whatever the
terminal (cli/app.py); COLUMNS is fixed as well, for any renderer that reads it.

To refresh the README after a change of output, run the commands and write what they
print: ``python tests/test_readme.py --write`` does exactly that (then review the diff).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import tcpweave

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BLOCK = re.compile(r"^```console\n(.*?)^```$", re.MULTILINE | re.DOTALL)
ENTRY = "import sys; from tcpweave.cli import main; sys.argv[0] = 'tcpweave'; sys.exit(main())"
TOOLS = {"ls", "head"}  # the only commands besides tcpweave a block may run
ELAPSED = re.compile(r"│ time( +)│ +[0-9.]+ s │")
#: what a command says on stderr when numba's cache lacks its kernels (cli/guard.py): the
#: README shows runs with the cache filled
COMPILE_NOTICE = re.compile(
    r"^compiling kernels \(first run only\)…\n(?:  \d+\. \w+\n)*"
    r"|^compiled \d+ kernels in [0-9.]+ s; later runs load them from numba's cache\n",
    re.MULTILINE,
)


@dataclass(frozen=True)
class Command:
    line: str  # as written after "$ "
    output: str  # the lines printed under it in the README

    @property
    def argv(self) -> list[str]:
        return shlex.split(self.line)


def blocks(text: str) -> list[tuple[int, list[Command]]]:
    """(line number, commands) of every console block of ``text``."""
    found = []
    for m in BLOCK.finditer(text):
        lineno = text.count("\n", 0, m.start()) + 1
        found.append((lineno, parse(m.group(1))))
    return found


def parse(body: str) -> list[Command]:
    commands: list[Command] = []
    line, out = None, []
    for row in body.splitlines():
        if row.startswith("$ "):
            if line is not None:
                commands.append(Command(line, "\n".join(out)))
            line, out = row[2:], []
        elif line is None:
            raise ValueError(f"console block does not start with a command: {row!r}")
        else:
            out.append(row)
    if line is not None:
        commands.append(Command(line, "\n".join(out)))
    return commands


def tidy(text: str, tmp: Path) -> str:
    """What the README shows of real output: the temporary directory written ``TMP``,
    no trailing spaces, no trailing blank lines."""
    lines = [r.rstrip() for r in text.replace(str(tmp), "TMP").splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines)


def normalise(text: str, tmp: Path) -> str:
    """``tidy``, and the elapsed time of ``extract`` masked: what is compared."""
    return ELAPSED.sub(lambda m: f"│ time{m.group(1)}│ (elapsed) │", tidy(text, tmp))


def run(command: Command, cwd: Path) -> tuple[int, str]:
    """Exit status and output (stdout, then stderr without the compile notice)."""
    argv = command.argv
    if argv[0] == "tcpweave":
        argv = [sys.executable, "-c", ENTRY, *argv[1:]]
    elif argv[0] not in TOOLS:
        raise ValueError(f"README console blocks run tcpweave, {sorted(TOOLS)} only: {argv[0]}")
    env = dict(os.environ, COLUMNS="200", TERM="dumb")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    return done.returncode, done.stdout + COMPILE_NOTICE.sub("", done.stderr)


def workspace(tmp: Path) -> Path:
    shutil.copytree(ROOT / "examples", tmp / "examples")
    return tmp


README_BLOCKS = blocks(README.read_text())


def test_readme_has_an_example_of_every_command() -> None:
    shown = {c.argv[1] for _, cmds in README_BLOCKS for c in cmds if c.argv[0] == "tcpweave"}
    every = {"extract", "streams", "follow", "packets", "info", "audit", "compare", "pdus"}
    assert every <= shown, f"README has no console example of {sorted(every - shown)}"


@pytest.mark.parametrize(
    "commands", [c for _, c in README_BLOCKS], ids=[f"line{n}" for n, _ in README_BLOCKS]
)
def test_readme_console_block(commands: list[Command], tmp_path: Path) -> None:
    cwd = workspace(tmp_path)
    for command in commands:
        status, printed = run(command, cwd)
        assert status == 0, f"$ {command.line}\nexit {status}\n{printed}"
        assert normalise(printed, tmp_path) == normalise(command.output, tmp_path), (
            f"$ {command.line}: output differs from the README"
        )


PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def test_readme_python_examples_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The ```python blocks run in order, as one script, from a directory holding examples/."""
    sources = PYTHON_BLOCK.findall(README.read_text())
    assert len(sources) >= 3
    monkeypatch.chdir(workspace(tmp_path))
    namespace: dict[str, object] = {"__name__": "readme"}
    for n, source in enumerate(sources):
        exec(compile(source, f"README.md python block {n + 1}", "exec"), namespace)
    printed = capsys.readouterr().out
    assert printed.startswith("74 ")  # the first example prints the number of TCP packets


LINK = re.compile(r"\]\(([^)\s]+)\)")
#: paths of this checkout named in backquotes (other projects' src/... are citations)
MENTION = re.compile(r"`((?:docs|scripts|tests|examples|fuzz|bench|src/tcpweave)/[\w./-]+)`")


def anchors(markdown: Path) -> set[str]:
    """GitHub's anchors for the headings of a markdown file."""
    heads = re.findall(r"^#+ (.+)$", markdown.read_text(), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in heads}


@pytest.mark.parametrize(
    "doc", [README, *sorted((ROOT / "docs").glob("*.md"))], ids=lambda p: p.name
)
def test_documents_point_only_into_the_repository(doc: Path) -> None:
    """Every relative link (and its #anchor) and every `path/...` named in the README and
    docs/ exists in this checkout: nothing refers to files someone who clones lacks."""
    text = doc.read_text()
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+://|mailto:", target):
            continue
        path, _, anchor = target.partition("#")
        resolved = (doc.parent / path) if path else doc
        missing_anchor = anchor and resolved.suffix == ".md" and anchor not in anchors(resolved)
        if not resolved.exists() or missing_anchor:
            broken.append(target)
    for mention in MENTION.findall(text):
        if not (ROOT / mention).exists():
            broken.append(mention)
    assert "DESIGN.md" not in text
    assert broken == []


def test_readme_links_every_page_of_docs() -> None:
    linked = set(LINK.findall(README.read_text()))
    pages = {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")}
    assert sorted(pages - linked) == []


def test_console_blocks_are_parsed_as_sessions() -> None:
    body = "$ tcpweave info a.pcap\nline 1\n  line 2\n$ ls out\nx\n"
    assert parse(body) == [
        Command("tcpweave info a.pcap", "line 1\n  line 2"),
        Command("ls out", "x"),
    ]
    with pytest.raises(ValueError, match="does not start with a command"):
        parse("output first\n$ tcpweave info a.pcap\n")


def test_normalise_masks_only_the_elapsed_time(tmp_path: Path) -> None:
    a = f"│ time              │     62.73 s │  \nextracted to {tmp_path}/out  "
    b = "│ time              │      1.02 s │\nextracted to TMP/out"
    assert normalise(a, tmp_path) == normalise(b, tmp_path)
    assert normalise("│ bytes │ 62.73 s │", tmp_path) != normalise("│ bytes │ 1.02 s │", tmp_path)


DESIGN = ROOT / "docs" / "design.md"


def design_section(title: str) -> str:
    text = DESIGN.read_text()
    start = text.index(f"### {title}\n")
    end = text.find("\n#", start + 1)
    return text[start:end]


def test_design_lists_the_packet_table_columns_in_order() -> None:
    rows = [r for r in design_section("Packet table").splitlines() if r.startswith("| `")]
    named = [n for r in rows for n in re.findall(r"`([a-z_0-9]+)`", r.split("|")[1])]
    assert tuple(named) == tcpweave.PACKET_COLUMN_NAMES


def test_design_lists_the_plan_tables_and_fates() -> None:
    section = design_section("Plan")
    with tcpweave.open(ROOT / "examples" / "sample-http.pcap") as cap:
        plan = cap.plan()
    for table in ("rows", "directions", "gaps", "conflicts"):
        row = next(r for r in section.splitlines() if r.startswith(f"| `{table}` |"))
        listed = re.findall(r"`([a-z_0-9]+)`", row.split("|")[2])
        shown = [c for c in getattr(plan, table) if c != "dir"]  # dir: internal (Plan doc)
        assert listed == shown, table
    fates = re.search(r"Fates: (.*?)\. Gap", section, re.DOTALL)
    assert fates is not None
    assert re.findall(r"`([a-z-]+)`", fates.group(1)) == [str(f) for f in tcpweave.Fate]
    reasons = re.search(r"Gap\s+reasons: (.*?)\.", section, re.DOTALL)
    assert reasons is not None
    assert re.findall(r"`([a-z-]+)`", reasons.group(1)) == [str(r) for r in tcpweave.GapReason]


def test_design_lists_the_pdu_columns() -> None:
    section = design_section("PDUs")
    with tcpweave.open(ROOT / "examples" / "sample-http.pcap") as cap:
        names = cap.pdus(tcpweave.Http()).to_arrow().schema.names
    columns = section.split("(`ok`")[0] + section.split("`incomplete`)")[1]  # not the states
    listed = re.findall(r"`([a-z_]+)`", columns)
    assert listed == names


def write_readme() -> None:
    """Run every console block and write what each command printed under it."""
    import tempfile

    text = README.read_text()

    def rerun(m: re.Match[str]) -> str:
        with tempfile.TemporaryDirectory() as tmp:
            cwd = workspace(Path(tmp))
            rows = []
            for command in parse(m.group(1)):
                status, printed = run(command, cwd)
                if status != 0:
                    raise SystemExit(f"$ {command.line}: exit {status}\n{printed}")
                rows += [f"$ {command.line}", tidy(printed, Path(tmp))]
        return "```console\n" + "\n".join(r for r in rows if r) + "\n```"

    README.write_text(BLOCK.sub(rerun, text))


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        raise SystemExit("usage: python tests/test_readme.py --write")
    write_readme()
