"""The configuration reference, docs/configuration.md, rendered from the settings schema.

Every section of ``schema.SECTIONS`` and every table the pipeline file takes besides them
(``[[features]]``, ``[[outputs]]``, ``[labels]``, ...: the other fields of ``Settings``) becomes a
heading, its class docstring and a table of its keys: type (a ``Literal``'s choices listed),
default and description. The descriptions are the comments beside the fields in the schema's
source (the comment lines right above a field, then the one after it), read with ``tokenize``
and ``ast``, so each is written once, in the schema. A field without a comment gets an empty
description. ``tests/unit/settings/test_reference.py`` fails while the committed file differs
from what this renders; ``make docs`` writes it again.

    python -m streamflow.settings.reference                # print it
    python -m streamflow.settings.reference --out FILE     # write it (make docs)
"""

from __future__ import annotations

import argparse
import ast
import functools
import inspect
import io
import re
import tokenize
import types
import typing
from dataclasses import MISSING, Field, dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal

from streamflow.settings.loading import ENV_PREFIX, TABLE_KEYS
from streamflow.settings.schema import PATH_KEYS, SECTIONS, Secret, Settings

# Settings fields that are not keys of the file: the pipeline's name is rendered in the
# introduction, ``source`` is where the settings were read from.
_NOT_TABLES = ("name", "source")
# Comments that talk to tools, not to users.
_DIRECTIVE = re.compile(r"^(fmt:|noqa|type:|pragma|pyright:|mypy:)")
# A sentence after a section's note on its property tables, where another page says more.
_SEE_ALSO = {
    "kafka": (
        "Which properties each client takes, and which are refused: "
        "[Kafka client properties](running.md#kafka-client-properties).",
    ),
}
_SCALARS = {str: "string", int: "integer", float: "number", bool: "boolean"}
_PLURALS = {str: "strings", int: "integers", float: "numbers", bool: "booleans"}

INTRO = f"""\
# Configuration reference

<!-- Generated from streamflow/settings/schema.py by `make docs`
     (python -m streamflow.settings.reference); edit the comments there, not this file. -->

One pipeline file (TOML, e.g. `pipelines/telemetry.toml`) holds topics, schemas, the feature list
(type, required or default, valid range, clip or reject, normalization), the model, batching,
device, Kafka and metrics settings. Paths in it are relative to the file. Every setting can
be overridden, highest first:

1. the command line: `--set section.key=value` (and `--bootstrap`, `--metrics-port`, `--pipeline`)
2. environment variables: `{ENV_PREFIX}<SECTION>_<KEY>`, e.g.
   `{ENV_PREFIX}KAFKA_BOOTSTRAP=kafka:9092`, `{ENV_PREFIX}BATCHING_MAX_BATCH=1024`;
   `{ENV_PREFIX}PIPELINE` names the file
3. the file

A bad setting stops start-up with a message naming the key and the file; every problem is
listed at once. `streamflow validate` also loads the model and checks that the schema has
every feature with the right type, and that the model's input (name, type, width), its
outputs (each mapped, each post-processing fitting its shape, the class names matching) and
its trained feature order match the pipeline; then that the result schema, when one is given,
has every declared field with the declared type.

`--set` is repeatable (`--set kafka.linger_ms=5 --set batching.max_batch=1024`); `--bootstrap X`
is `--set kafka.bootstrap=X` and `--metrics-port N` is `--set metrics.port=N`. Every key of the
sections below has its environment variable, the section and key in capitals
(`batching.max_delay_ms`: `{ENV_PREFIX}BATCHING_MAX_DELAY_MS`). A value given there is a string,
read like the file's: `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`), a number, a list
as comma-separated items (`--set result.pass_through=rack,status`), a choice only among those
listed. A path given there is relative to the pipeline file's folder too. The array tables
(`[[features]]`, `[[outputs]]`, `[[transforms]]`) and `[labels]` are read from the file only.
Secrets (type `secret (masked)`) are never shown: give them as environment variables, not with
`--set`, which shows in `ps` (see [Security](security.md)).

The file's one top-level key is `name`, the pipeline's name (letters, digits, `-` and `_`,
required): it names the consumer groups, `<kafka.group_prefix>-<name>-<step>`.
"""


@dataclass(frozen=True)
class ClassDoc:
    """A settings class as its source documents it: its docstring and each field's comments."""

    doc: str
    comments: dict[str, str]


def _markdown(text: str) -> str:
    """reStructuredText literals (``x``) as Markdown code (`x`)."""
    return text.replace("``", "`")


def _text(text: str) -> str:
    """A comment as Markdown text: ``<token>`` outside code would read as an HTML tag."""
    parts = text.split("`")
    for i in range(0, len(parts), 2):  # outside code spans
        parts[i] = parts[i].replace("<", "&lt;").replace(">", "&gt;")
    return "`".join(parts)


def _without_choices(note: str, choices: str) -> str:
    """A comment that only repeats the type's choices says nothing more: drop them from it."""
    if " | " not in choices:
        return note
    if note == choices:
        return ""
    if note.startswith(choices + " "):
        return note[len(choices) :].strip()
    if note.endswith(" " + choices):
        return note[: -len(choices)].strip()
    return note


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell (GitHub reads ``\\|`` as a pipe, in code too)."""
    return text.replace("|", "\\|").replace("\n", " ")


@functools.cache
def _parsed(path: str) -> tuple[ast.Module, dict[int, str], frozenset[int]]:
    """A source file's syntax tree, its comments by line, and the lines that hold code."""
    text = Path(path).read_text()
    comments: dict[int, str] = {}
    code: set[int] = set()
    skip = {tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
        elif tok.type not in skip:
            code.update(range(tok.start[0], tok.end[0] + 1))
    return ast.parse(text), comments, frozenset(code)


def _comment_of(node: ast.stmt, comments: dict[int, str], code: frozenset[int]) -> str:
    """The comment lines right above ``node`` (no blank line between), then those on its lines."""
    above: list[str] = []
    line = node.lineno - 1
    while line in comments and line not in code:
        above.insert(0, comments[line])
        line -= 1
    end = node.end_lineno or node.lineno
    inside = [comments[n] for n in range(node.lineno, end + 1) if n in comments]
    return " ".join(c for c in above + inside if c and not _DIRECTIVE.match(c))


@functools.cache
def describe(cls: type) -> ClassDoc:
    """``cls``'s docstring and field comments, from the source file that defines it."""
    source = inspect.getsourcefile(cls)
    if source is None:  # pragma: no cover - every settings class is defined in a .py file
        return ClassDoc("", {})
    tree, comments, code = _parsed(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == cls.__name__:
            by_field = {
                stmt.target.id: _comment_of(stmt, comments, code)
                for stmt in node.body
                if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
            }
            return ClassDoc(_markdown(ast.get_docstring(node) or ""), by_field)
    return ClassDoc("", {})  # pragma: no cover


def _union_args(tp: Any) -> tuple[Any, ...]:
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        return typing.get_args(tp)
    return ()


def _choice(value: Any) -> str:
    return '""' if value == "" else str(value)


def type_text(tp: Any, *, path: bool = False) -> str:
    """How a field's type reads in the reference: ``Literal["a", "b"]`` -> ``a | b``."""
    if path:
        return "path"
    if tp is Secret:
        return "secret (masked)"
    options = [a for a in _union_args(tp) if a is not type(None)]
    if options:
        return " or ".join(type_text(a) for a in options)
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(_choice(a) for a in typing.get_args(tp))
    if origin is tuple:
        item = typing.get_args(tp)[0]
        if typing.get_origin(item) is Literal:
            return f"list of: {type_text(item)}"
        return f"list of {_PLURALS.get(item, type_text(item))}"
    if origin is dict or tp is dict:
        return "table of properties (string, number or boolean)"
    return _SCALARS.get(tp, getattr(tp, "__name__", str(tp)))


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, Secret):
        return '"********"' if value else '""'
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml(k)} = {_toml(v)}" for k, v in value.items()) + "}"
    return str(value)


def default_text(f: Field[Any]) -> str:
    """A field's default as TOML; ``required`` when it has none, ``unset`` for None."""
    if f.default is not MISSING:
        value = f.default
    elif f.default_factory is not MISSING:
        value = f.default_factory()
    else:
        return "required"
    return "unset" if value is None else f"`{_toml(value)}`"


def _table(cls: type, section: str | None) -> list[str]:
    """The key | type | default | description rows of ``cls``'s fields."""
    hints = typing.get_type_hints(cls)
    doc = describe(cls)
    rows = ["| key | type | default | description |", "|---|---|---|---|"]
    for f in fields(cls):
        tp = type_text(hints[f.name], path=(section, f.name) in PATH_KEYS)
        note = _text(_markdown(_without_choices(doc.comments.get(f.name, ""), tp)))
        rows.append(f"| `{f.name}` | `{_cell(tp)}` | {_cell(default_text(f))} | {_cell(note)} |")
    return rows


def _section(name: str, cls: type) -> list[str]:
    out = [f"## [{name}]", ""]
    doc = describe(cls).doc
    if doc:
        out += [doc, ""]
    env = f"{ENV_PREFIX}{name.upper()}_<KEY>"
    out += [f"Environment: `{env}`; command line: `--set {name}.<key>=<value>`.", ""]
    tables = TABLE_KEYS.get(name, ())
    if tables:
        named = ", ".join(f"`[{name}.{t}]`" for t in tables)
        are, they = ("are tables", "they have") if len(tables) > 1 else ("is a table", "it has")
        note = (
            f"{named} {are} of free-form properties, each name quoted "
            '(`"name.with.dots" = value`). From the command line each property is its own '
            f"`--set {name}.{tables[0]}.<property>=<value>`; {they} no environment variable."
        )
        out += [" ".join([note, *_SEE_ALSO.get(name, ())]), ""]
    return [*out, *_table(cls, name), ""]


def _item_class(tp: Any) -> type | None:
    """X for ``tuple[X, ...]`` when X is a settings dataclass: an array of tables."""
    if typing.get_origin(tp) is tuple:
        item = typing.get_args(tp)[0]
        if isinstance(item, type) and is_dataclass(item):
            return item
    return None


def _extra_tables() -> list[str]:
    """The file's tables besides ``SECTIONS``: the other fields of ``Settings``."""
    hints = typing.get_type_hints(Settings)
    settings_doc = describe(Settings)
    out: list[str] = []
    for f in fields(Settings):
        if f.name in SECTIONS or f.name in _NOT_TABLES:
            continue
        note = _text(_markdown(settings_doc.comments.get(f.name, "")))
        item = _item_class(hints[f.name])
        heading = f"## [[{f.name}]]" if item else f"## [{f.name}]"
        out += [heading, ""]
        if note:
            out += [note, ""]
        if item is not None:
            doc = describe(item).doc
            if doc:
                out += [doc, ""]
            out += [*_table(item, None), ""]
    return out


def render() -> str:
    """docs/configuration.md, from the schema as it is now."""
    extra = [
        f.name for f in fields(Settings) if f.name not in SECTIONS and f.name not in _NOT_TABLES
    ]
    hints = typing.get_type_hints(Settings)
    contents = [f"[[{n}]]" if _item_class(hints[n]) else f"[{n}]" for n in extra]
    index = ", ".join(
        f"[`{label}`](#{label.strip('[]')})" for label in [f"[{n}]" for n in SECTIONS] + contents
    )
    lines = [INTRO, f"Sections: {index}.", ""]
    for name, cls in SECTIONS.items():
        lines += _section(name, cls)
    lines += _extra_tables()
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m streamflow.settings.reference",
        description="Render the configuration reference (docs/configuration.md).",
    )
    parser.add_argument("--out", help="write it to this file (default: print it)")
    args = parser.parse_args(argv)
    text = render()
    if args.out:
        Path(args.out).write_text(text)
    else:
        print(text, end="")


if __name__ == "__main__":
    main()
