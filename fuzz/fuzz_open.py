"""Coverage-guided fuzzing of ``tcpweave.open`` with atheris (libFuzzer).

Invariant, the same as tests/test_fuzz.py: every input either opens as a
Capture (whose packets, stats, errors and payloads can be read) or raises
``tcpweave.CaptureError``; anything else is a crash. libFuzzer's -timeout and
-rss_limit_mb flags enforce the time and memory bounds. See fuzz/README.md.
"""

from __future__ import annotations

import os
import struct
import sys
import tempfile

import atheris

#: numba compiles these from their bytecode, which atheris' instrumentation would break
_NOT_INSTRUMENTED = (
    "tcpweave._jit",
    "tcpweave._bytes",
    "tcpweave.capture._kernels",
    "tcpweave.decode._kernels",
)

with atheris.instrument_imports(include=["tcpweave"], exclude=list(_NOT_INSTRUMENTED)):
    import tcpweave
    from tcpweave import CaptureError

_DIR = tempfile.mkdtemp(prefix="tcpweave-fuzz-")
#: the first byte picks the file name, so the compressed readers' magic checks see a plain name
_NAMES = ("input.pcap", "input.pcapng", "input.pcap.gz", "input.pcap.zst")


def test_one_input(data: bytes) -> None:
    if not data:
        return
    path = os.path.join(_DIR, _NAMES[data[0] % len(_NAMES)])
    with open(path, "wb") as f:
        f.write(data[1:])
    try:
        cap = tcpweave.open(path)
    except CaptureError:
        return
    try:
        _ = (len(cap.packets), cap.stats, [str(e) for e in cap.errors])
        for row in range(min(len(cap.packets), 8)):
            cap.payload(row)
    finally:
        cap.close()


def _warm_up() -> None:
    """Compile (or load) every kernel before fuzzing, so no input pays for numba's compiler."""
    frame = b"\0" * 12 + b"\x08\x00" + bytes([0x45, 0, 0, 40]) + b"\0" * 5 + b"\x06" + b"\0" * 30
    frame = frame[:26] + b"\0" * 14 + bytes([0x50]) + b"\0" * 7
    pcap = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    pcap += struct.pack("<IIII", 0, 0, len(frame), len(frame)) + frame

    def block(btype: int, body: bytes) -> bytes:
        return struct.pack("<II", btype, 12 + len(body)) + body + struct.pack("<I", 12 + len(body))

    pcapng = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    pcapng += block(1, struct.pack("<HHI", 1, 0, 0))
    pcapng += block(6, struct.pack("<IIIII", 0, 0, 0, len(frame), len(frame)) + frame + b"\0" * 2)
    for data in (pcap, pcapng):
        test_one_input(b"\0" + data)


def main() -> None:
    _warm_up()
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
