"""Reading a YAML manifest at the node level, one entry at a time.

The file is parsed with PyYAML's safe loader, but never constructed into Python
objects: entries are composed into nodes one by one (so only one entry's nodes
are alive at a time) and each scalar is judged by how it is written. A value
written without quotes that a YAML 1.1 parser (PyYAML, yaml.v2, Ruby) or a YAML
1.2 parser (core schema) would read as anything but a string is reported with
its line, never coerced: ``no`` is a boolean to YAML 1.1, ``0123`` an integer
to both, ``1e3`` a number to YAML 1.2, ``2024-01-02`` a date to YAML 1.1.

Accepted shapes: a list of entries, or a mapping whose only key is ``tenants``
holding that list. Each entry is a mapping of field names to single values.
Aliases are counted by the nodes they stand for and nesting depth is capped,
both while composing, so an alias bomb or a deeply nested file is refused
before it costs memory. Merge keys (``<<``) are refused: write each field out.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from typing import BinaryIO

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from provisioner.errors import Problem
from provisioner.manifest.duplicates import row_digest
from provisioner.manifest.fields import build_row
from provisioner.manifest.model import (
    Blank,
    Entry,
    Refused,
    RowValues,
    ScanContext,
    ScanItem,
)
from provisioner.manifest.text import decode_whole

_YAML_TAG_PREFIX = "tag:yaml.org,2002:"
STR_TAG = _YAML_TAG_PREFIX + "str"

# How PyYAML's YAML 1.1 resolver tags plain scalars that are not strings.
_YAML11_MEANINGS = {
    "tag:yaml.org,2002:bool": "a boolean",
    "tag:yaml.org,2002:int": "an integer",
    "tag:yaml.org,2002:float": "a number",
    "tag:yaml.org,2002:null": "null (no value)",
    "tag:yaml.org,2002:timestamp": "a date",
    "tag:yaml.org,2002:merge": "a merge key",
    "tag:yaml.org,2002:value": "a default-value key",
}
# YAML 1.1 also makes booleans of these; PyYAML chose not to, other parsers do.
_YAML11_SHORT_BOOLEANS = frozenset({"y", "Y", "n", "N"})

# The YAML 1.2 core schema (spec section 10.3.2), applied with fullmatch.
_YAML12_CORE = (
    (re.compile(r"null|Null|NULL|~"), "null (no value)"),
    (re.compile(r"true|True|TRUE|false|False|FALSE"), "a boolean"),
    (re.compile(r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+"), "an integer"),
    (
        re.compile(
            r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
            r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)"
        ),
        "a number",
    ),
)


_SURROGATE = re.compile("[\ud800-\udfff]")


def _surrogate_message(text: str) -> str | None:
    """What is wrong with a lone surrogate in ``text``, or None without one.

    Only an escape such as "\\ud800" makes one; no UTF-8 file, journal or
    report can hold it.
    """
    surrogate = _SURROGATE.search(text)
    if surrogate is None:
        return None
    return (
        f"holds the escape \\u{ord(surrogate.group()):04x}, half of a UTF-16 "
        "pair and not a character; write the character itself or remove the "
        "escape."
    )


def plain_meaning(value: str, yaml11_tag: str) -> str | None:
    """How YAML 1.1 or 1.2 reads an unquoted scalar that is not a string.

    ``yaml11_tag`` is the tag PyYAML's resolver gave it. None means both read
    a string.
    """
    yaml11 = _YAML11_MEANINGS.get(yaml11_tag)
    if yaml11 is None and value in _YAML11_SHORT_BOOLEANS:
        yaml11 = "a boolean"
    yaml12 = "null (no value)" if value == "" else None
    for pattern, meaning in _YAML12_CORE:
        if yaml12 is None and pattern.fullmatch(value):
            yaml12 = meaning

    if yaml11 and yaml12:
        if yaml11 == yaml12:
            return f"YAML 1.1 and 1.2 both read it as {yaml11}"
        return f"YAML 1.1 reads it as {yaml11} and YAML 1.2 as {yaml12}"
    if yaml11:
        return f"YAML 1.1 reads it as {yaml11}"
    if yaml12:
        return f"YAML 1.2 reads it as {yaml12}"
    return None


def _line(node_or_event: Node | yaml.Event) -> int:
    mark = node_or_event.start_mark
    return 0 if mark is None else mark.line + 1


def _short_tag(tag: str) -> str:
    """``tag:yaml.org,2002:int`` as it is written, ``!!int``."""
    if tag.startswith(_YAML_TAG_PREFIX):
        return "!!" + tag.removeprefix(_YAML_TAG_PREFIX)
    return tag


def _offset(node_or_event: Node | yaml.Event) -> int:
    mark = node_or_event.start_mark
    return -1 if mark is None else mark.index


class _Loader(yaml.SafeLoader):
    """The safe loader, composing under caps on depth and alias expansion."""

    def __init__(self, text: str, ctx: ScanContext) -> None:
        super().__init__(text)
        self.ctx = ctx
        self.depth = 0
        self.alias_nodes = 0
        # Stream offsets of scalars that carry an explicit tag (``!!str 0123``).
        self.explicit_tags: set[int] = set()
        self._sizes: list[int] = []
        self._anchor_sizes: dict[str, int] = {}

    # types-PyYAML leaves the parser's event methods untyped; these two wrap them.
    def upcoming(self) -> yaml.Event:
        event: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]
        return event

    def consume(self) -> yaml.Event:
        event: yaml.Event = self.get_event()  # type: ignore[no-untyped-call]
        return event

    def _add_size(self, size: int) -> None:
        if self._sizes:
            self._sizes[-1] += size

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        event = self.upcoming()
        limits = self.ctx.limits
        if isinstance(event, yaml.AliasEvent):
            weight = self._anchor_sizes.get(event.anchor or "", 1)
            self.alias_nodes += weight
            if self.alias_nodes > limits.max_yaml_aliases:
                raise Refused(
                    self.ctx.problem(
                        _line(event),
                        None,
                        f"Aliases in this file stand for more than "
                        f"{limits.max_yaml_aliases:,} values (limits."
                        "max_yaml_aliases), the shape of an alias bomb; write "
                        "the values out instead of repeating anchors.",
                        "alias-limit",
                    )
                )
            self._add_size(weight)
            return super().compose_node(parent, index)

        if self.depth >= limits.max_yaml_depth:
            raise Refused(
                self.ctx.problem(
                    _line(event),
                    None,
                    f"Line {_line(event)} nests values more than "
                    f"{limits.max_yaml_depth} levels deep (limits.max_yaml_depth); "
                    "a manifest needs four at most: tenants, list, entry, value.",
                    "depth-limit",
                )
            )
        if isinstance(event, yaml.ScalarEvent) and event.tag is not None:
            self.explicit_tags.add(_offset(event))
        self.depth += 1
        self._sizes.append(1)
        node = super().compose_node(parent, index)
        self.depth -= 1
        size = self._sizes.pop()
        self._add_size(size)
        if isinstance(event, yaml.NodeEvent) and event.anchor is not None:
            self._anchor_sizes[event.anchor] = size
        return node

    def compose_at(self, depth: int) -> Node:
        """Compose the next node as one found ``depth`` levels down."""
        self.depth = depth
        node = self.compose_node(None, 0)
        assert node is not None  # only a stream or document end composes nothing
        return node

    def not_text(self, node: ScalarNode) -> str | None:
        """Why a scalar is not plainly a string to every parser, or None."""
        if _offset(node) in self.explicit_tags:
            if node.tag == STR_TAG:
                return None
            return f"it carries the tag {_short_tag(node.tag)}"
        if node.style is not None:
            return None  # quoted or block scalars are strings to every parser

        return plain_meaning(node.value, node.tag)

    def text_advice(self, node: ScalarNode, field: str) -> str | None:
        """``not_text`` completed with what to write instead, or None."""
        reason = self.not_text(node)
        if reason is None:
            return None
        if _offset(node) in self.explicit_tags:
            return f"{reason}; remove the tag"

        quoted = f'{field}: "{node.value}"'
        if reason.endswith("null (no value)"):
            return (
                f"{reason}; put it in quotes ({quoted}) if that text is meant, or "
                "leave the field out"
            )
        return (
            f"{reason}; put it in quotes ({quoted}) so that every parser reads "
            "the same string"
        )


def _kind(node: Node) -> str:
    if isinstance(node, SequenceNode):
        return "a list"
    if isinstance(node, MappingNode):
        return "a mapping"
    return f"the single value {node.value!r}"


def _yaml_error(ctx: ScanContext, text: str, error: yaml.YAMLError) -> Refused:
    """A PyYAML error as a located sentence."""
    if isinstance(error, yaml.MarkedYAMLError):
        mark = error.problem_mark or error.context_mark
        line = None if mark is None else mark.line + 1
        what = error.problem or "invalid YAML"
        context = ""
        if error.context and error.context_mark and error.problem_mark:
            since = error.context_mark.line + 1
            context = f" ({error.context}, from line {since})"
        elif error.context:
            context = f" ({error.context})"
        message = (
            f"Line {line} is not valid YAML: {what}{context}; check the "
            "indentation, the colons and the quotes there."
        )
        return Refused(ctx.problem(line, None, message, "yaml-syntax"))

    position = getattr(error, "position", None)
    character = getattr(error, "character", None)
    line = None if position is None else text.count("\n", 0, position) + 1
    shown = f"U+{character:04X}" if isinstance(character, int) else "a character"
    message = (
        f"Line {line} holds {shown}, which YAML does not allow in a file (a "
        "control character); remove it."
    )
    return Refused(ctx.problem(line, None, message, "yaml-syntax"))


class _EntryReader:
    """Builds one Entry from one composed entry node."""

    def __init__(self, loader: _Loader, ctx: ScanContext) -> None:
        self.loader = loader
        self.ctx = ctx

    def field_name(self, key: Node, problems: list[Problem]) -> str | None:
        line = _line(key)
        if not isinstance(key, ScalarNode):
            message = f"A field name must be text, not {_kind(key)}."
            problems.append(self.ctx.problem(line, None, message, "not-text"))
            return None
        if key.tag == "tag:yaml.org,2002:merge" and key.style is None:
            message = "Merge keys (<<) are not supported; write each field out."
            problems.append(self.ctx.problem(line, None, message, "merge-key"))
            return None
        reason = self.loader.not_text(key)
        if reason is not None:
            message = (
                f"The field name {key.value!r} is not text: {reason}; put it in quotes."
            )
            problems.append(self.ctx.problem(line, None, message, "not-text"))
            return None

        surrogate = _surrogate_message(key.value)
        if surrogate is not None:
            message = f"A field name {surrogate}"
            problems.append(self.ctx.problem(line, None, message, "not-text"))
            return None

        name: str = key.value.strip().casefold()
        if name == "":
            message = "A field name is empty; name the field or remove it."
            problems.append(self.ctx.problem(line, None, message, "not-text"))
            return None
        return name

    def entry(self, node: Node) -> Entry | Blank:
        line = _line(node)
        if isinstance(node, ScalarNode) and node.value == "" and node.style is None:
            return Blank(line)
        if not isinstance(node, MappingNode):
            message = (
                f"The entry on line {line} is {_kind(node)}, not a mapping; write "
                "each entry as '- namespace: <name>' with its other fields below."
            )
            problem = self.ctx.problem(line, None, message, "not-a-mapping")
            return Entry(line, None, None, [problem])

        problems: list[Problem] = []
        texts: dict[str, str] = {}
        lines: dict[str, int] = {}
        not_text: dict[str, str] = {}
        for key, value in node.value:
            name = self.field_name(key, problems)
            if name is None:
                continue
            key_line = _line(key)
            if name in texts:
                message = (
                    f"{name} is given twice in this entry (lines "
                    f"{lines[name]} and {key_line}); keep one."
                )
                problems.append(
                    self.ctx.problem(key_line, name, message, "duplicate-key")
                )
                continue
            if not isinstance(value, ScalarNode):
                message = f"{name} must be a single value, not {_kind(value)}."
                problems.append(
                    self.ctx.problem(key_line, name, message, "not-a-value")
                )
                continue
            surrogate = _surrogate_message(value.value)
            if surrogate is not None:
                message = f"{name} {surrogate}"
                problems.append(self.ctx.problem(key_line, name, message, "not-text"))
                continue
            texts[name] = value.value
            lines[name] = key_line
            advice = self.loader.text_advice(value, name)
            if advice is not None:
                not_text[name] = advice

        values = RowValues(texts, lines, not_text)
        row, row_problems = build_row(self.ctx, line, values)
        problems = sorted(problems + row_problems, key=lambda p: p.line or 0)
        if any(p.severity == "error" for p in problems):
            row = None
        located = [_at_row(p, line) for p in problems]
        return Entry(line, values, row, located, row_digest(values))


def _at_row(problem: Problem, row_line: int) -> Problem:
    """Locate a problem at its entry's first line, naming the field's own line.

    Every row problem carries the row's line, in both formats, so that a
    consumer can match problems to ``invalid_lines`` and ``ManifestRow.line``.
    """
    if problem.line is None or problem.line == row_line:
        return problem
    message = f"Line {problem.line}: {problem.message}"

    return dataclasses.replace(problem, line=row_line, message=message)


def _entries(loader: _Loader, ctx: ScanContext, depth: int) -> Iterator[ScanItem]:
    """Yield the entries of the list whose start is the next event."""
    reader = _EntryReader(loader, ctx)
    loader.consume()
    last_line = 0
    while not loader.check_event(yaml.SequenceEndEvent):
        event = loader.upcoming()
        line = _line(event)
        if line == last_line:
            yield ctx.problem(
                line,
                None,
                f"Several entries start on line {line}; put each entry on a line "
                "of its own, since the line is how reports and journals name a row.",
                "same-line",
            )
        last_line = line

        if isinstance(event, yaml.AliasEvent):
            loader.compose_at(depth)
            message = (
                f"The entry on line {line} is an alias (*{event.anchor}); write the "
                "entry out."
            )
            problem = ctx.problem(line, None, message, "alias-entry")
            yield Entry(line, None, None, [problem])
            continue
        yield reader.entry(loader.compose_at(depth))
    loader.consume()


def _root_mapping(loader: _Loader, ctx: ScanContext) -> Iterator[ScanItem]:
    """Yield the entries under ``tenants:``, and problems with other keys."""
    loader.consume()
    start_line = 0
    key_lines: dict[str, int] = {}
    while not loader.check_event(yaml.MappingEndEvent):
        key = loader.compose_at(1)
        line = _line(key)
        start_line = start_line or line
        name = key.value.strip().casefold() if isinstance(key, ScalarNode) else None
        if name in key_lines:
            yield ctx.problem(
                line,
                name,
                f"The key {name!r} is given twice (lines {key_lines[name]} and "
                f"{line}); keep one.",
                "duplicate-key",
            )
            loader.compose_at(1)
            continue
        if name != "tenants":
            shown = repr(key.value) if isinstance(key, ScalarNode) else _kind(key)
            yield ctx.problem(
                line,
                None,
                f"Unknown top-level key {shown}; a manifest mapping holds only "
                "'tenants:', the list of entries.",
                "unknown-key",
            )
            loader.compose_at(1)
            continue

        key_lines[name] = line
        if loader.check_event(yaml.SequenceStartEvent):
            yield from _entries(loader, ctx, depth=2)
            continue
        value = loader.compose_at(1)
        if isinstance(value, ScalarNode) and value.value in ("", "~", "null"):
            message = (
                "tenants has no entries under it; list them as '  - namespace: "
                "<name>' (no tenants at all is written 'tenants: []')."
            )
        else:
            message = (
                "tenants must be a list of entries ('- namespace: <name>'), not "
                f"{_kind(value)}."
            )
        yield ctx.problem(_line(value), "tenants", message, "not-a-list")
    loader.consume()

    if "tenants" not in key_lines:
        yield ctx.problem(
            start_line or 1,
            None,
            "The manifest has no 'tenants:' key; list the entries under it.",
            "not-a-list",
        )


def _document(loader: _Loader, ctx: ScanContext) -> Iterator[ScanItem]:
    loader.consume()
    if loader.check_event(yaml.StreamEndEvent):
        raise Refused(
            ctx.problem(
                None,
                None,
                "The file holds no YAML document; write a list of entries such as "
                "'- namespace: acme'.",
                "empty",
            )
        )
    loader.consume()

    if loader.check_event(yaml.SequenceStartEvent):
        yield from _entries(loader, ctx, depth=1)
    elif loader.check_event(yaml.MappingStartEvent):
        yield from _root_mapping(loader, ctx)
    else:
        node = loader.compose_at(0)
        raise Refused(
            ctx.problem(
                _line(node),
                None,
                f"The manifest is {_kind(node)}; it must be a list of entries "
                "('- namespace: <name>') or a mapping with a 'tenants:' list.",
                "not-a-list",
            )
        )
    loader.consume()

    if not loader.check_event(yaml.StreamEndEvent):
        line = _line(loader.upcoming())
        raise Refused(
            ctx.problem(
                line,
                None,
                f"A second YAML document starts on line {line}; a manifest is one "
                "document, so join them or split the file.",
                "multiple-documents",
            )
        )


def scan_yaml(handle: BinaryIO, ctx: ScanContext) -> Iterator[ScanItem]:
    """Yield each entry of a YAML manifest, and problems with its shape."""
    limit = ctx.limits.max_yaml_bytes
    data = handle.read(limit + 1)
    ctx.digest.update(data)
    if len(data) > limit:
        raise Refused(
            ctx.problem(
                None,
                None,
                f"The file is over {limit:,} bytes (limits.max_yaml_bytes); YAML "
                "is read whole, so write a manifest this big as CSV, which is "
                "streamed.",
                "too-big",
            )
        )
    text = decode_whole(ctx, data)
    del data

    try:
        loader = _Loader(text, ctx)
    except yaml.YAMLError as exc:
        raise _yaml_error(ctx, text, exc) from None
    try:
        yield from _document(loader, ctx)
    except yaml.YAMLError as exc:
        raise _yaml_error(ctx, text, exc) from None
    finally:
        loader.dispose()
