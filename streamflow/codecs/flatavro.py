"""A fast Avro reader for flat record schemas, used by ``codecs`` (no other module sees bytes).

fastavro's ``schemaless_reader`` costs about 21 µs for a 19-field telemetry record, most
of it per-call and per-field dispatch. Telemetry schemas are flat: a record of primitives
and ``["null", primitive]`` unions. For those, ``compile_reader`` generates one
straight-line Python function from the schema (as ``dataclasses`` generates ``__init__``),
about three times faster. Anything else (nested records, arrays, maps, enums, fixed,
unions of several non-null types) returns ``None`` and the caller uses fastavro.

The reader is at least as strict as fastavro: every record it accepts, fastavro decodes
to the same dict (property-tested in tests/unit/test_flatavro.py). Errors are ``DecodeError``
with the same reasons (and reason codes) as the fastavro path.

``compile_checker`` is the guard for the schemas left to fastavro (and for writer schemas
from a schema registry): it walks the bytes without building anything and refuses a string
whose length runs past the message or exceeds the limit, and an array or map of more items
than the limit, before fastavro allocates for it.
fastavro itself would loop 2**40 times on an array of nulls whose count claims 2**40.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from streamflow.errors import DecodeError
from streamflow.records import ReasonCode

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
            if (
                shift == 63 and c > 1
            ):  # fastavro would keep the low 64 bits of it: a different number
                raise DecodeError("avro: varint larger than 64 bits", ReasonCode.INVALID_AVRO)
            return (result >> 1) ^ -(result & 1), p
        shift += 7
        if shift > 63:
            raise DecodeError("avro: varint longer than 10 bytes", ReasonCode.INVALID_AVRO)


def _primitive(t: Any) -> str | None:
    if isinstance(t, dict) and set(t) <= {"type", "logicalType"} | {"connect.name", "doc"}:
        t = t.get("type")
    return t if isinstance(t, str) and t in _PRIMITIVES else None


def _read_code(
    t: str, target: str, indent: str, field: str = "", max_len: int | None = None
) -> list[str]:
    """Lines that read one value of primitive type ``t`` at ``p`` into ``target``."""
    if t == "null":
        return [f"{indent}{target} = None"]
    if t == "boolean":
        return [
            f"{indent}c = b[p]",
            f"{indent}p += 1",
            f"{indent}if c > 1:"
            " raise DecodeError(f'avro: boolean byte {c} is neither 0 nor 1', INVALID_AVRO)",
            f"{indent}{target} = c == 1",
        ]
    if t in ("int", "long"):
        return [f"{indent}{target}, p = _varint(b, p)"]
    if t in ("float", "double"):
        size, fn = (4, "_FLOAT") if t == "float" else (8, "_DOUBLE")
        return [
            f"{indent}if p + {size} > n: raise _Truncated",
            f"{indent}{target} = {fn}(b, p)[0]",
            f"{indent}p += {size}",
        ]
    # string / bytes: a length, checked against the message (a length no message could hold is a
    # corrupt or truncated record) and then the limit (a real, too long value), before anything
    # is sliced
    decode = ".decode()" if t == "string" else ""
    where = f"field {field}: " if field else ""
    lines = [
        f"{indent}ln, p = _varint(b, p)",
        f"{indent}if ln < 0: raise DecodeError(f'avro: {where}negative length {{ln}}',"
        " INVALID_AVRO)",
        f"{indent}if p + ln > n: raise DecodeError(f'avro: {where}length prefix larger "
        "than the message "
        f"({{ln}} bytes, {{n - p}} left)', INVALID_AVRO)",
    ]
    if max_len is not None:
        kind = "string" if t == "string" else "bytes value"
        lines.append(
            f"{indent}if ln > {max_len}: raise DecodeError(f'avro: {where}{kind} of {{ln}} "
            "bytes exceeds "
            f"max_string_length {max_len}', TOO_LARGE)"
        )
    return lines + [f"{indent}{target} = b[p:p + ln]{decode}", f"{indent}p += ln"]


def compile_reader(schema: Any, *, max_string_length: int | None = None) -> Reader | None:
    """A reader for ``schema`` (the JSON form) if it is a flat record, else ``None``.

    A string or bytes value longer than ``max_string_length`` is refused from its length prefix.
    """
    if not isinstance(schema, dict) or schema.get("type") != "record" or not schema.get("fields"):
        return None
    lines = ["def read(b):", "    n = len(b)", "    p = 0"]
    names: list[str] = []
    for i, f in enumerate(schema["fields"]):
        name, t = f.get("name"), f.get("type")
        if not isinstance(name, str) or not name.isidentifier():  # names go into the generated code
            return None
        names.append(name)
        target = f"v{i}"
        prim = _primitive(t)
        if prim is not None:
            lines += _read_code(prim, target, "    ", name, max_string_length)
            continue
        if not isinstance(t, list) or not 1 <= len(t) <= 2 or any(_primitive(x) is None for x in t):
            return None
        branches = [_primitive(x) for x in t]
        if len(branches) == 2 and "null" not in branches:
            return None  # a union of two non-null types: leave it to fastavro
        # The branch index is a zigzag varint: 0 -> byte 0, 1 -> byte 2. Longer (non-canonical)
        # encodings of the same numbers take the general path.
        lines += [
            "    c = b[p]",
            "    p += 1",
            "    if c >= 0x80:",
            "        c, p = _varint(b, p - 1)",
            "        c *= 2",
        ]
        for k, bt in enumerate(branches):
            lines.append(f"    {'if' if k == 0 else 'elif'} c == {2 * k}:")
            lines += _read_code(bt, target, "        ", name, max_string_length)  # type: ignore[arg-type]
        lines += [
            "    else:",
            f"        raise DecodeError(f'avro: field {name}: union branch "
            "{c // 2 if c % 2 == 0 else -(c + 1) // 2}"
            " out of range', INVALID_AVRO)",
        ]
    lines += [
        "    if p != n:",
        "        raise DecodeError(f'avro: {n - p} trailing bytes after the record"
        " (wrong schema?)', INVALID_AVRO)",
        "    return {" + ", ".join(f"{nm!r}: v{i}" for i, nm in enumerate(names)) + "}",
    ]
    namespace: dict[str, Any] = {
        "_varint": _varint,
        "_DOUBLE": _DOUBLE,
        "_FLOAT": _FLOAT,
        "_Truncated": _Truncated,
        "DecodeError": DecodeError,
        "INVALID_AVRO": ReasonCode.INVALID_AVRO,
        "TOO_LARGE": ReasonCode.TOO_LARGE,
    }
    exec(compile("\n".join(lines), f"<flatavro {schema.get('name', 'record')}>", "exec"), namespace)  # noqa: S102
    generated: Reader = namespace["read"]

    def read(data: bytes) -> dict[str, Any]:
        try:
            return generated(data)
        except (IndexError, _Truncated):
            raise DecodeError("avro: truncated record (EOF)", ReasonCode.INVALID_AVRO) from None
        except UnicodeDecodeError as exc:
            raise DecodeError(
                f"avro: string is not utf-8 ({exc.reason})", ReasonCode.INVALID_UTF8
            ) from None

    return read


Checker = Callable[[bytes], None]
_Skip = Callable[[bytes, int, list[int]], int]
_FIXED_SIZE = {"null": 0, "float": 4, "double": 8}


def compile_checker(schema: Any, *, max_string_length: int, max_array_length: int) -> Checker:
    """``check(data)`` raises DecodeError if ``data`` (one value of ``schema``, the JSON form) has a
    string/bytes longer than ``max_string_length``, an array or map of more than
    ``max_array_length`` items, a length that runs past the end, or is truncated.

    It builds no values. Items across the whole message are also bounded (by the message's
    size plus ``max_array_length``): nested arrays of zero-byte items (null, empty records)
    cannot make the decoder loop for longer than the message is long.
    """
    named: dict[str, _Skip] = {}

    def skip_varint(b: bytes, p: int, budget: list[int]) -> int:
        return _varint(b, p)[1]

    def fixed(size: int) -> _Skip:
        def skip(b: bytes, p: int, budget: list[int]) -> int:
            if p + size > len(b):
                raise IndexError
            return p + size

        return skip

    def sized(kind: str, where: str) -> _Skip:
        def skip(b: bytes, p: int, budget: list[int]) -> int:
            ln, p = _varint(b, p)
            if ln < 0:
                raise DecodeError(f"avro: {where}negative length {ln}", ReasonCode.INVALID_AVRO)
            if p + ln > len(
                b
            ):  # first: a length no message could hold is corruption, not a long value
                raise DecodeError(
                    f"avro: {where}length prefix larger than the message ({ln} "
                    f"bytes, {len(b) - p} left)",
                    ReasonCode.INVALID_AVRO,
                )
            if ln > max_string_length:
                raise DecodeError(
                    f"avro: {where}{kind} of {ln} bytes exceeds max_string_length "
                    f"{max_string_length}",
                    ReasonCode.TOO_LARGE,
                )
            return p + ln

        return skip

    def blocks(kind: str, where: str, item: _Skip, key: _Skip | None) -> _Skip:
        def skip(b: bytes, p: int, budget: list[int]) -> int:
            total = 0
            while True:
                count, p = _varint(b, p)
                if count == 0:
                    return p
                if count < 0:  # a block with its size in bytes
                    count = -count
                    p = _varint(b, p)[1]
                total += count
                if total > max_array_length:
                    raise DecodeError(
                        f"avro: {where}{kind} of {total} items exceeds max_array_length "
                        f"{max_array_length}",
                        ReasonCode.TOO_LARGE,
                    )
                budget[0] -= count
                if budget[0] < 0:
                    raise DecodeError(
                        f"avro: {where}more {kind} items than the message has bytes",
                        ReasonCode.INVALID_AVRO,
                    )
                for _ in range(count):
                    if key is not None:
                        p = key(b, p, budget)
                    p = item(b, p, budget)

        return skip

    def union(branches: list[_Skip], where: str) -> _Skip:
        def skip(b: bytes, p: int, budget: list[int]) -> int:
            i, p = _varint(b, p)
            if not 0 <= i < len(branches):
                raise DecodeError(
                    f"avro: {where}union branch {i} out of range", ReasonCode.INVALID_AVRO
                )
            return branches[i](b, p, budget)

        return skip

    def enum(n_symbols: int, where: str) -> _Skip:
        def skip(b: bytes, p: int, budget: list[int]) -> int:
            i, p = _varint(b, p)
            if not 0 <= i < n_symbols:
                raise DecodeError(
                    f"avro: {where}enum index {i} out of range", ReasonCode.INVALID_AVRO
                )
            return p

        return skip

    def record(fields: list[_Skip]) -> _Skip:
        def skip(b: bytes, p: int, budget: list[int]) -> int:
            for f in fields:
                p = f(b, p, budget)
            return p

        return skip

    def fullname(name: str, ns: str) -> str:
        return name if "." in name or not ns else f"{ns}.{name}"

    def build(t: Any, ns: str, where: str) -> _Skip:
        if isinstance(t, list):
            return union([build(x, ns, where) for x in t], where)
        if isinstance(t, str):
            if t in ("string", "bytes"):
                return sized("string" if t == "string" else "bytes value", where)
            if t in ("int", "long"):
                return skip_varint
            if t == "boolean":
                return fixed(1)
            if t in _FIXED_SIZE:
                return fixed(_FIXED_SIZE[t])
            ref = named.get(fullname(t, ns)) or named.get(
                t
            )  # a record is named before its fields are built
            if ref is None:
                raise ValueError(f"unknown type {t!r}")
            return ref
        kind = t.get("type")
        if kind in ("record", "error"):
            name = fullname(t["name"], t.get("namespace", ns))
            fields: list[_Skip] = []
            named[name] = record(fields)
            inner = name.rpartition(".")[0]
            fields += [build(f["type"], inner, f"field {f['name']}: ") for f in t["fields"]]
            return named[name]
        if kind == "enum":
            named[fullname(t["name"], t.get("namespace", ns))] = enum(len(t["symbols"]), where)
            return named[fullname(t["name"], t.get("namespace", ns))]
        if kind == "fixed":
            named[fullname(t["name"], t.get("namespace", ns))] = fixed(int(t["size"]))
            return named[fullname(t["name"], t.get("namespace", ns))]
        if kind == "array":
            return blocks("array", where, build(t["items"], ns, where), None)
        if kind == "map":
            return blocks("map", where, build(t["values"], ns, where), sized("string", where))
        return build(kind, ns, where)  # {"type": "long", "logicalType": ...}

    skip_all = build(schema, "", "")

    def check(data: bytes) -> None:
        try:
            skip_all(data, 0, [len(data) + max_array_length])
        except IndexError:
            raise DecodeError("avro: truncated record (EOF)", ReasonCode.INVALID_AVRO) from None
        except RecursionError:
            raise DecodeError("avro: nested too deeply", ReasonCode.INVALID_AVRO) from None

    return check


Writer = Callable[..., bytes]
_PACK_DOUBLE = struct.Struct("<d").pack
_PACK_FLOAT = struct.Struct("<f").pack
_SMALL = [bytes([(n << 1) if n >= 0 else ((-n << 1) - 1)]) for n in range(-64, 64)]


def zigzag(n: int) -> bytes:
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
        "int": f"zigzag({v}.__index__())",
        "long": f"zigzag({v}.__index__())",
        "float": f"_PACK_FLOAT({v})",
        "double": f"_PACK_DOUBLE({v})",
        "string": f"_str({v})",
        "bytes": f"zigzag(len({v})) + bytes({v})",
    }[t]


def _str(v: str) -> bytes:
    e = v.encode()
    return zigzag(len(e)) + e


def compile_writer(schema: Any) -> Writer | None:
    """``write(v0, v1, ...) -> bytes`` for a flat record ``schema``, values in field order;
    else ``None``."""
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
        parts.append(
            f"({_SMALL[null + 64]!r} if {v} is None else "
            f"{_SMALL[1 - null + 64]!r} + {_write_expr(kinds[1 - null], v)})"
        )
    args = ", ".join(f"v{i}" for i in range(len(schema["fields"])))
    src = f"def write({args}):\n    return b''.join(({', '.join(parts)},))\n"
    namespace: dict[str, Any] = {
        "zigzag": zigzag,
        "_PACK_DOUBLE": _PACK_DOUBLE,
        "_PACK_FLOAT": _PACK_FLOAT,
        "_str": _str,
    }
    exec(compile(src, f"<flatavro writer {schema.get('name', 'record')}>", "exec"), namespace)  # noqa: S102
    writer: Writer = namespace["write"]
    return writer
