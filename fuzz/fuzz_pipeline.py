"""Coverage-guided fuzzing of the whole pipeline with atheris (libFuzzer).

Each input is a capture file that goes through ``extract``, the stream API, the audit
and two framers (fuzz/pipeline.py); the invariant: it is read or raises
``CaptureError``, and its output on disk stays within ``disk_bound``. libFuzzer's
-timeout and -rss_limit_mb enforce time and memory. See fuzz/README.md.
"""

from __future__ import annotations

import os
import sys
import tempfile

import atheris

#: numba compiles these from their bytecode, which atheris' instrumentation would break
_NOT_INSTRUMENTED = (
    "tcpweave._jit",
    "tcpweave._bytes",
    "tcpweave.capture._kernels",
    "tcpweave.decode._kernels",
    "tcpweave.flows._kernels",
    "tcpweave.reassembly._kernels",
    "tcpweave.output._kernels",
    "tcpweave.framing._kernels",
    "tcpweave.audit._kernels",
)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
with atheris.instrument_imports(include=["tcpweave"], exclude=list(_NOT_INSTRUMENTED)):
    from pipeline import check_pipeline

_DIR = tempfile.mkdtemp(prefix="tcpweave-fuzz-pipeline-")


def test_one_input(data: bytes) -> None:
    path = os.path.join(_DIR, "input.pcap")
    with open(path, "wb") as f:
        f.write(data)
    check_pipeline(path, _DIR)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
