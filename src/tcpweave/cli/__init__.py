"""cli/: thin command-line layer. Parses options, calls the library, renders with rich."""

from __future__ import annotations

from tcpweave.cli.app import app

__all__ = ["app", "main"]


def main() -> None:
    """Console-script entry point."""
    app()
