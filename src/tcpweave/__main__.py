"""``python -m tcpweave``: the command line, as the ``tcpweave`` script."""

from tcpweave.cli import main

main()
