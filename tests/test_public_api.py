"""The public surface: ``tcpweave.__all__`` is pinned, and it holds every type that a
public function or a method of a public class returns (so that users can name, annotate
and isinstance-check whatever the library hands them)."""

from __future__ import annotations

import inspect
import types
import typing
from typing import Any

import numpy as np
import pyarrow as pa

import tcpweave

PINNED = [
    "PACKET_COLUMN_NAMES",
    "Audit",
    "BlockColumns",
    "Capture",
    "CaptureError",
    "CaptureStats",
    "CarveSummary",
    "Checksum",
    "ChecksumMode",
    "Chunk",
    "Close",
    "Conflict",
    "ConnState",
    "Delimited",
    "Direction",
    "Dns",
    "Encapsulation",
    "ExtractSummary",
    "Fate",
    "FixedSize",
    "Flows",
    "Framer",
    "Gap",
    "GapReason",
    "Gathered",
    "Http",
    "HttpObject",
    "Interrupted",
    "LengthPrefixed",
    "LinkType",
    "Matrix",
    "Modbus",
    "Need",
    "ObjectState",
    "PacketTable",
    "Partition",
    "Pdu",
    "PduState",
    "Pdus",
    "Plan",
    "Policy",
    "Reason",
    "Run",
    "Settings",
    "SignalReceived",
    "Skip",
    "Store",
    "Stream",
    "StreamViews",
    "TcpweaveError",
    "Tls",
    "UsageError",
    "VarintLength",
    "birthday_probability",
    "carve",
    "extract",
    "open",
    "open_store",
    "write_objects",
]

#: types that are not tcpweave's own and need no export
FOREIGN = (type(None), int, float, str, bytes, bool, memoryview, np.ndarray, pa.Table)


def test_all_is_pinned() -> None:
    assert tcpweave.__all__ == PINNED
    for name in PINNED:
        assert hasattr(tcpweave, name), name


def _leaves(hint: Any) -> list[Any]:
    """The classes a return annotation names (inside unions, lists, tuples, iterators)."""
    origin = typing.get_origin(hint)
    if origin is None:
        return [hint]
    out: list[Any] = []
    for arg in typing.get_args(hint):
        if arg is not Ellipsis:
            out += _leaves(arg)
    return out


def _public_callables() -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = []
    for name in PINNED:
        obj = getattr(tcpweave, name)
        if inspect.isfunction(obj):
            found.append((name, obj))
        elif inspect.isclass(obj) and obj.__module__.startswith("tcpweave"):
            for attr, member in vars(obj).items():
                if attr.startswith("_") and attr != "__iter__":
                    continue
                fn = member.fget if isinstance(member, property) else member
                if isinstance(fn, classmethod | staticmethod):
                    fn = fn.__func__
                if inspect.isfunction(fn):
                    found.append((f"{name}.{attr}", fn))
    return found


def test_every_returned_type_is_exported() -> None:
    exported = {getattr(tcpweave, n) for n in PINNED if isinstance(getattr(tcpweave, n), type)}
    missing = []
    for where, fn in _public_callables():
        hints = typing.get_type_hints(fn, localns=dict(vars(tcpweave)))
        for leaf in _leaves(hints.get("return", type(None))):
            if not isinstance(leaf, type) or isinstance(leaf, types.GenericAlias):
                continue
            if leaf.__module__.startswith("tcpweave") and leaf not in exported:
                missing.append(f"{where} -> {leaf.__module__}.{leaf.__qualname__}")
            elif not leaf.__module__.startswith("tcpweave"):
                assert leaf in FOREIGN or leaf.__module__.split(".")[0] in (
                    "builtins", "collections", "typing", "numpy", "pyarrow", "io", "_io",
                ), (where, leaf)  # fmt: skip
    assert not missing, "\n".join(missing)
