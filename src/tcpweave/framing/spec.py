"""Framer specs as the CLI takes them: ``NAME[:key=value,...]`` or ``module:Class``.

    length:offset=4,size=2,endian=big,adjust=6,max=260
    magic:magic=0x4d5a,offset=2,size=2,adjust=4
    delimiter:delim=\\r\\n,max=8192      (also "line")
    fixed:size=16
    varint:adjust=0
    http | tls | dns | modbus
    mypackage.myproto:MyFramer          (a Framer subclass, built without arguments)

Byte values (magic, delim) are ``0x`` + hex digits, or text with backslash escapes.
"""

from __future__ import annotations

import codecs
import importlib
from collections.abc import Callable
from typing import Any

from tcpweave.errors import UsageError
from tcpweave.framing.api import Framer
from tcpweave.framing.generic import Delimited, FixedSize, LengthPrefixed, VarintLength
from tcpweave.framing.protocols import Dns, Http, Modbus, Tls

__all__ = ["BUILTINS", "parse_framer"]


def _bytes(text: str) -> bytes:
    if text.lower().startswith("0x"):
        try:
            return bytes.fromhex(text[2:])
        except ValueError:
            raise UsageError(f"bad hex bytes {text!r}") from None
    return codecs.escape_decode(text.encode())[0]  # type: ignore[no-any-return]


def _int(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise UsageError(f"{text!r} is not a number") from None


# key in a spec -> (keyword argument, converter)
_LENGTH_KEYS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "offset": ("offset", _int),
    "size": ("size", _int),
    "endian": ("endian", str),
    "adjust": ("adjust", _int),
    "max": ("max_len", _int),
    "min": ("min_len", _int),
    "magic": ("magic", _bytes),
    "magic_offset": ("magic_offset", _int),
}
_KEYS: dict[str, tuple[Callable[..., Framer], dict[str, tuple[str, Callable[[str], Any]]]]] = {
    "length": (LengthPrefixed, _LENGTH_KEYS),
    "magic": (LengthPrefixed, _LENGTH_KEYS),
    "delimiter": (Delimited, {"delim": ("delimiter", _bytes), "max": ("max_len", _int)}),
    "line": (Delimited, {"delim": ("delimiter", _bytes), "max": ("max_len", _int)}),
    "fixed": (
        FixedSize,
        {
            "size": ("size", _int),
            "magic": ("magic", _bytes),
            "magic_offset": ("magic_offset", _int),
        },
    ),
    "varint": (
        VarintLength,
        {
            "offset": ("offset", _int),
            "adjust": ("adjust", _int),
            "max": ("max_len", _int),
            "min": ("min_len", _int),
        },
    ),
    "http": (Http, {}),
    "tls": (Tls, {}),
    "dns": (Dns, {}),
    "modbus": (Modbus, {}),
}
BUILTINS = tuple(_KEYS)


def parse_framer(spec: str) -> Framer:
    """The framer a spec names (see the module docstring)."""
    name, _, params = spec.partition(":")
    if name not in _KEYS:
        if params and params.isidentifier():
            return _load(name, params)
        raise UsageError(
            f"unknown framer {name!r} (built-in: {', '.join(BUILTINS)}; or module:Class)"
        )
    make, keys = _KEYS[name]
    kwargs: dict[str, Any] = {}
    for item in filter(None, params.split(",")):
        key, eq, value = item.partition("=")
        if not eq or key not in keys:
            allowed = ", ".join(keys) or "none"
            raise UsageError(f"framer {name}: bad parameter {item!r} (parameters: {allowed})")
        kw, convert = keys[key]
        kwargs[kw] = convert(value)
    if name == "magic" and not kwargs.get("magic"):
        raise UsageError("framer magic needs magic=BYTES")
    if name == "fixed" and "size" not in kwargs:
        raise UsageError("framer fixed needs size=N")
    try:
        return make(**kwargs)
    except TypeError as exc:
        raise UsageError(f"framer {name}: {exc}") from None


def _load(module: str, attr: str) -> Framer:
    try:
        target = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise UsageError(f"cannot load framer {module}:{attr}: {exc}") from None
    framer = target() if isinstance(target, type) else target
    if not isinstance(framer, Framer):
        raise UsageError(f"{module}:{attr} is not a tcpweave Framer")
    return framer
