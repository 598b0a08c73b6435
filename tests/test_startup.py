"""Start-up (issue 15, item 8): what ``import tcpweave`` and ``tcpweave --help`` load, and
what a first run (numba's kernel cache empty) tells the user.

Timing is bench/startup.py's business; these tests check the causes instead: which
modules a fresh interpreter holds after an import or a command (``sys.modules``, in a
subprocess), and what a command prints on stderr when numba does, or does not, compile.
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

import tcpweave
import tcpweave.run
from conftest import ROOT
from tcpweave import _compiling
from tcpweave.cli.guard import guarded

HEAVY = ("numpy", "numba", "llvmlite", "pyarrow")
COMPILING = "compiling kernels (first run only)"


def _loaded_after(code: str) -> list[str]:
    """The heavy top-level modules a fresh interpreter holds after running ``code``."""
    probe = (
        f"import sys\n{code}\n"
        "import json\n"
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    return json.loads(done.stdout.splitlines()[-1])  # type: ignore[no-any-return]


def test_import_tcpweave_loads_no_numpy_numba_or_pyarrow() -> None:
    assert _loaded_after("import tcpweave") == []


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["extract", "--help"]])
def test_the_command_line_starts_without_numpy_numba_or_pyarrow(argv: list[str]) -> None:
    run_cli = (
        f"sys.argv = ['tcpweave', *{argv!r}]\n"
        "from tcpweave.cli import main\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
    )
    assert _loaded_after(run_cli) == []


def test_a_public_name_loads_what_it_needs() -> None:
    # the other side of laziness: a name that is an engine type imports the engine
    assert _loaded_after("import tcpweave\ntcpweave.Capture") == sorted(HEAVY)


def _type_checking_imports(path: Path) -> dict[str, tuple[str, ...]]:
    """Module -> names of the ``if TYPE_CHECKING:`` imports of a package's __init__.py."""
    tree = ast.parse(path.read_text())
    found: dict[str, tuple[str, ...]] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for imp in node.body:
                assert isinstance(imp, ast.ImportFrom) and imp.module is not None
                found[imp.module] = tuple(a.asname or a.name for a in imp.names)
    return found


@pytest.mark.parametrize("package", [tcpweave, tcpweave.run], ids=lambda p: p.__name__)
def test_lazy_names_are_what_type_checkers_see(package: object) -> None:
    """The names a type checker reads (TYPE_CHECKING imports), ``__all__`` and the names
    resolved at run time are the same, each the object of the module it is imported from."""
    path = Path(package.__file__)  # type: ignore[attr-defined]
    seen = _type_checking_imports(path)
    names = [n for names in seen.values() for n in names]
    assert sorted(names) == sorted(package.__all__)  # type: ignore[attr-defined]
    assert set(names) <= set(dir(package))
    for module, module_names in seen.items():
        for name in module_names:
            assert getattr(package, name) is getattr(importlib.import_module(module), name)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        tcpweave.nope  # type: ignore[attr-defined]  # noqa: B018


# -------------------------------------------------------------------- the first run


@pytest.fixture(scope="module")
def empty_pcap(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pcap with a header and no record (libpcap's file format, LINKTYPE_ETHERNET): reading
    it compiles the record scanner, and little else, so a first run is short."""
    path = tmp_path_factory.mktemp("startup") / "empty.pcap"
    path.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    return path


def _info(capture: Path, cache: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache), "PYTHONPATH": str(ROOT / "src")}
    env.pop("NUMBA_DISABLE_JIT", None)
    return subprocess.run(
        [sys.executable, "-m", "tcpweave", "info", str(capture), *flags],
        capture_output=True, text=True, timeout=600, env=env, check=True,
    )  # fmt: skip


@pytest.mark.skipif(bool(os.environ.get("NUMBA_DISABLE_JIT")), reason="nothing compiles")
def test_a_first_run_says_it_compiles_and_a_second_does_not(
    empty_pcap: Path, tmp_path: Path
) -> None:
    first = _info(empty_pcap, tmp_path / "cache")
    lines = first.stderr.splitlines()
    assert lines[0] == COMPILING + "…", first.stderr
    kernels = [line.split(". ", 1)[1] for line in lines[1:-1]]
    assert "scan_pcap_records" in kernels
    assert lines[-1].startswith(f"compiled {len(kernels)} kernels in ")
    # only what the command needs: info neither decodes an empty capture nor plans streams
    assert "decode_records" not in first.stderr and "plan_directions" not in first.stderr
    second = _info(empty_pcap, tmp_path / "cache")
    assert COMPILING not in second.stderr and "scan_pcap_records" not in second.stderr
    assert second.stdout == first.stdout


def test_quiet_commands_hear_no_compilation() -> None:
    heard: list[object] = []

    def command() -> None:
        heard.append(_compiling.listener())

    guarded(command)(quiet=True)
    guarded(command)()
    assert heard[0] is None and callable(heard[1])
