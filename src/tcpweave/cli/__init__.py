"""cli/: thin command-line layer. Parses options, calls the library, renders with rich.

Building the command line -- and so ``tcpweave --help`` and ``--version`` -- imports typer,
rich and tcpweave's enums and errors only: each command imports the engine (numpy,
numba, pyarrow) in its body, so that a user waits for them only when a command needs
them (tests/test_startup.py checks it).
"""

from __future__ import annotations

from tcpweave.cli.app import app

__all__ = ["app", "main"]


def main() -> None:
    """Console-script entry point."""
    app()
