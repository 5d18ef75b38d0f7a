"""A fast Avro reader for flat record schemas, used by ``codecs`` (no other module sees bytes).

fastavro's ``schemaless_reader`` costs about 21 µs for a 19-field telemetry record, most
of it per-call and per-field dispatch. Telemetry schemas are flat: a record of primitives
and ``["null", primitive]`` unions. For those, ``compile_reader`` generates one
straight-line Python function from the schema (as ``dataclasses`` generates ``__init__``),
about three times faster. Anything else (nested records, arrays, maps, enums, fixed,
unions of several non-null types) returns ``None`` and the caller uses fastavro.

The reader is at least as strict as fastavro: every record it accepts, fastavro decodes
to the same dict (property-tested in tests/unit/test_codecs.py). Errors are ``DecodeError``
with the same reasons as the fastavro path.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from streamflow.errors import DecodeError

Reader = Callable[[bytes], dict[str, Any]]

_PRIMITIVES = ("null", "boolean", "int", "long", "float", "double", "string", "bytes")
_DOUBLE = struct.Struct("<d").unpack_from
_FLOAT = struct.Struct("<f").unpack_from


class _Truncated(Exception):
    pass


def _varint(b: bytes, p: int) -> tuple[int, int]:
    """A zigzag-encoded Avro int/long at ``p``: (value, next position)."""
    result = shift = 0
    while True:
        c = b[p]  # IndexError at the end of the data: truncated
        p += 1
        result |= (c & 0x7F) << shift
        if c < 0x80:
            return (result >> 1) ^ -(result & 1), p
        shift += 7
        if shift > 63:
            raise DecodeError("avro: varint longer than 10 bytes")


def _primitive(t: Any) -> str | None:
    if isinstance(t, dict) and set(t) <= {"type", "logicalType"} | {"connect.name", "doc"}:
        t = t.get("type")
    return t if isinstance(t, str) and t in _PRIMITIVES else None


def _read_code(t: str, target: str, indent: str) -> list[str]:
    """Lines that read one value of primitive type ``t`` at ``p`` into ``target``."""
    if t == "null":
        return [f"{indent}{target} = None"]
    if t == "boolean":
        return [f"{indent}c = b[p]", f"{indent}p += 1",
                f"{indent}if c > 1: raise DecodeError(f'avro: boolean byte {{c}} is neither 0 nor 1')",
                f"{indent}{target} = c == 1"]
    if t in ("int", "long"):
        return [f"{indent}{target}, p = _varint(b, p)"]
    if t in ("float", "double"):
        size, fn = (4, "_FLOAT") if t == "float" else (8, "_DOUBLE")
        return [f"{indent}if p + {size} > n: raise _Truncated", f"{indent}{target} = {fn}(b, p)[0]",
                f"{indent}p += {size}"]
    # string / bytes: a length, then that many bytes
    decode = ".decode()" if t == "string" else ""
    return [f"{indent}ln, p = _varint(b, p)",
            f"{indent}if ln < 0: raise DecodeError(f'avro: negative length {{ln}}')",
            f"{indent}if p + ln > n: raise DecodeError('avro: length prefix larger than the message')",
            f"{indent}{target} = b[p:p + ln]{decode}", f"{indent}p += ln"]


def compile_reader(schema: Any) -> Reader | None:
    """A reader for ``schema`` (the JSON form) if it is a flat record, else ``None``."""
    if not isinstance(schema, dict) or schema.get("type") != "record" or not schema.get("fields"):
        return None
    lines = ["def read(b):", "    n = len(b)", "    p = 0"]
    names: list[str] = []
    for i, f in enumerate(schema["fields"]):
        name, t = f.get("name"), f.get("type")
        if not isinstance(name, str):
            return None
        names.append(name)
        target = f"v{i}"
        prim = _primitive(t)
        if prim is not None:
            lines += _read_code(prim, target, "    ")
            continue
        if not isinstance(t, list) or not 1 <= len(t) <= 2 or any(_primitive(x) is None for x in t):
            return None
        branches = [_primitive(x) for x in t]
        if len(branches) == 2 and "null" not in branches:
            return None  # a union of two non-null types: leave it to fastavro
        # The branch index is a zigzag varint: 0 -> byte 0, 1 -> byte 2. Longer (non-canonical)
        # encodings of the same numbers take the general path.
        lines += ["    c = b[p]", "    p += 1", "    if c >= 0x80:", "        c, p = _varint(b, p - 1)",
                  "        c *= 2"]
        for k, bt in enumerate(branches):
            lines.append(f"    {'if' if k == 0 else 'elif'} c == {2 * k}:")
            lines += _read_code(bt, target, "        ")  # type: ignore[arg-type]
        lines += ["    else:",
                  f"        raise DecodeError(f'avro: field {name}: union branch {{c // 2 if c % 2 == 0 else -(c + 1) // 2}}"
                  " out of range')"]
    lines += ["    if p != n:",
              "        raise DecodeError(f'avro: {n - p} trailing bytes after the record (wrong schema?)')",
              "    return {" + ", ".join(f"{nm!r}: v{i}" for i, nm in enumerate(names)) + "}"]
    namespace: dict[str, Any] = {"_varint": _varint, "_DOUBLE": _DOUBLE, "_FLOAT": _FLOAT,
                                 "_Truncated": _Truncated, "DecodeError": DecodeError}
    exec(compile("\n".join(lines), f"<flatavro {schema.get('name', 'record')}>", "exec"), namespace)  # noqa: S102
    generated: Reader = namespace["read"]

    def read(data: bytes) -> dict[str, Any]:
        try:
            return generated(data)
        except (IndexError, _Truncated):
            raise DecodeError("avro: truncated record (EOF)") from None
        except UnicodeDecodeError as exc:
            raise DecodeError(f"avro: string is not utf-8 ({exc.reason})") from None

    return read


Writer = Callable[..., bytes]
_PACK_DOUBLE = struct.Struct("<d").pack
_PACK_FLOAT = struct.Struct("<f").pack
_SMALL = [bytes([(n << 1) if n >= 0 else ((-n << 1) - 1)]) for n in range(-64, 64)]


def _zigzag(n: int) -> bytes:
    """``n`` as an Avro zigzag varint."""
    if -64 <= n < 64:
        return _SMALL[n + 64]
    if not -(2**63) <= n < 2**63:
        raise ValueError(f"avro: {n} does not fit a long")
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _write_expr(t: str, v: str) -> str:
    """An expression giving the encoding of value ``v`` of primitive type ``t``."""
    return {
        "null": "b''",
        "boolean": f"(b'\\x01' if {v} else b'\\x00')",
        "int": f"_zigzag({v}.__index__())",
        "long": f"_zigzag({v}.__index__())",
        "float": f"_PACK_FLOAT({v})",
        "double": f"_PACK_DOUBLE({v})",
        "string": f"_str({v})",
        "bytes": f"_zigzag(len({v})) + bytes({v})",
    }[t]


def _str(v: str) -> bytes:
    e = v.encode()
    return _zigzag(len(e)) + e


def compile_writer(schema: Any) -> Writer | None:
    """``write(v0, v1, ...) -> bytes`` for a flat record ``schema``, values in field order; else ``None``."""
    if not isinstance(schema, dict) or schema.get("type") != "record" or not schema.get("fields"):
        return None
    parts: list[str] = []
    for i, f in enumerate(schema["fields"]):
        t, v = f.get("type"), f"v{i}"
        prim = _primitive(t)
        if prim is not None:
            parts.append(_write_expr(prim, v))
            continue
        union: list[str | None] = [_primitive(x) for x in t] if isinstance(t, list) else [None]
        kinds = [b for b in union if b is not None]
        if len(union) != 2 or len(kinds) != 2 or "null" not in kinds:
            return None
        null = kinds.index("null")
        parts.append(f"({_SMALL[null + 64]!r} if {v} is None else "
                     f"{_SMALL[1 - null + 64]!r} + {_write_expr(kinds[1 - null], v)})")
    args = ", ".join(f"v{i}" for i in range(len(schema["fields"])))
    src = f"def write({args}):\n    return b''.join(({', '.join(parts)},))\n"
    namespace: dict[str, Any] = {"_zigzag": _zigzag, "_PACK_DOUBLE": _PACK_DOUBLE, "_PACK_FLOAT": _PACK_FLOAT,
                                 "_str": _str}
    exec(compile(src, f"<flatavro writer {schema.get('name', 'record')}>", "exec"), namespace)  # noqa: S102
    writer: Writer = namespace["write"]
    return writer
