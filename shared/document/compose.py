"""Reading YAML into a node tree within limits, before any Python value is built from it.

Three limits keep every input, however hostile, to a located problem in bounded time:

* :data:`MAX_DOCUMENT_BYTES` of UTF-8 text (``document.too-large``), the broker's largest
  message;
* :data:`MAX_DEPTH` collections nested in one another (``document.too-deep``), counting the
  collections an alias stands for. libyaml's composer recurses in C (some ten thousand levels
  overflow the stack and kill the process) and its scanner is quadratic in flow depth; the
  validator's own walks recurse in Python;
* :data:`MAX_ALIAS_NODES` nodes that aliases stand for in total (``document.alias-expansion``):
  constructing a billion-laughs document is cheap because an alias shares one Python object,
  but every walk of the data expands it. An alias inside its own anchor (a recursive
  structure, ``&s {value: *s}``) is refused as ``document.recursive-alias``.

Most documents are composed by libyaml's C composer: :func:`provably_shallow` proves from the
text alone, with a few C-speed string scans, that they hold no alias and cannot nest deeper
than the limit. The others are composed here from libyaml's events, checking the limits at
each event, so a bomb or a deep document is refused after reading only as far as the first
event that exceeds a limit.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.events import (
    AliasEvent,
    DocumentStartEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceStartEvent,
    StreamEndEvent,
)
from yaml.nodes import CollectionNode, MappingNode, Node, ScalarNode, SequenceNode

_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the pure-Python one without libyaml

MAX_DOCUMENT_BYTES = 16 * 1024 * 1024
MAX_DEPTH = 100
MAX_ALIAS_NODES = 1_000_000

_STR, _SEQ, _MAP = "tag:yaml.org,2002:str", "tag:yaml.org,2002:seq", "tag:yaml.org,2002:map"
_PREFIX_LIMIT = 20
_LINE_PREFIX = re.compile(f"[\n\r\x85\u2028\u2029][\ufeff \t?:-]{{{_PREFIX_LIMIT}}}")


class DocumentSyntaxError(Exception):
    """The text cannot become a document: not YAML/JSON, or over a limit. Carries a line."""

    def __init__(self, line: int, message: str, code: str = "document.syntax") -> None:
        super().__init__(message)
        self.line = line
        self.message = message
        self.code = code


def check_size(text: str) -> None:
    """Refuse text of more than :data:`MAX_DOCUMENT_BYTES` UTF-8 bytes."""
    size = len(text)
    if size * 4 > MAX_DOCUMENT_BYTES and size <= MAX_DOCUMENT_BYTES:
        size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_DOCUMENT_BYTES:
        raise too_large()


def too_large() -> DocumentSyntaxError:
    return DocumentSyntaxError(1, f"the document is larger than {MAX_DOCUMENT_BYTES // (1024 * 1024)} MiB (the limit)", "document.too-large")


def provably_shallow(text: str) -> bool:
    """Whether ``text`` certainly holds no alias and nests at most :data:`MAX_DEPTH` deep.

    A block collection starts a new, deeper indentation column (a sequence directly under a
    mapping key may share its key's column, at most doubling the count), and only spaces and
    the indicators ``-``, ``?`` and ``:`` may precede its first token on the line: when no line
    starts with ``_PREFIX_LIMIT`` such characters, block nesting is below ``2 * _PREFIX_LIMIT``.
    Each ``{`` opens one flow collection and each ``[`` at most two (``[a: b]`` holds a
    single-pair mapping). Every alias starts with ``*``.
    """
    if "*" in text:
        return False
    if 2 * _PREFIX_LIMIT + 2 * text.count("[") + text.count("{") > MAX_DEPTH:
        return False
    head = text[:_PREFIX_LIMIT]
    if len(head) == _PREFIX_LIMIT and not head.strip("\ufeff \t?:-"):
        return False
    return _LINE_PREFIX.search(text) is None


def _guarded(construct: Callable[[Any, Node], Any], what: str) -> Callable[[Any, Node], Any]:
    """A scalar constructor that reports a value it cannot read at the value's line."""

    def guarded(loader: Any, node: Node) -> Any:
        try:
            return construct(loader, node)
        except yaml.YAMLError:
            raise
        except Exception as error:
            detail = f": {error}" if isinstance(error, (ValueError, OverflowError)) else ""
            raise ConstructorError(None, None, f"cannot read {node.value!r} as {what}{detail}", node.start_mark) from error

    return guarded


_IMPLICIT: dict[Any, tuple[tuple[str, re.Pattern[str]], ...]] = {
    first: tuple(resolvers) + tuple(_BaseLoader.yaml_implicit_resolvers.get(None, ()))
    for first, resolvers in _BaseLoader.yaml_implicit_resolvers.items() if first is not None
}
_WILDCARD: tuple[tuple[str, re.Pattern[str]], ...] = tuple(_BaseLoader.yaml_implicit_resolvers.get(None, ()))


class DocumentLoader(_BaseLoader):
    """PyYAML's safe loader with a faster tag resolver and scalar constructors that never crash.

    ``resolve`` does what :meth:`yaml.resolver.BaseResolver.resolve` does for a loader without
    path resolvers, with one table lookup by first character.
    """

    def resolve(self, kind: type, value: Any, implicit: tuple[bool, bool]) -> str:
        if kind is ScalarNode:
            if implicit[0]:
                for tag, pattern in _IMPLICIT.get(value[:1], _WILDCARD):
                    if pattern.match(value):
                        return tag
            return _STR
        return _SEQ if kind is SequenceNode else _MAP


for _tag, _method, _what in (
    ("int", SafeConstructor.construct_yaml_int, "an integer"),
    ("float", SafeConstructor.construct_yaml_float, "a number"),
    ("bool", SafeConstructor.construct_yaml_bool, "a boolean"),
    ("timestamp", SafeConstructor.construct_yaml_timestamp, "a timestamp"),
    ("binary", SafeConstructor.construct_yaml_binary, "base64 data"),
):
    DocumentLoader.add_constructor(f"tag:yaml.org,2002:{_tag}", _guarded(_method, _what))


def compose(loader: Any, text: str) -> tuple[Node | None, bool]:
    """The single document's root node (None when empty) and whether it has aliases.

    Limits are checked at each parser event unless :func:`provably_shallow` shows they hold.
    """
    if provably_shallow(text):
        return loader.get_single_node(), False
    return compose_within_limits(loader)


def compose_within_limits(loader: Any) -> tuple[Node | None, bool]:
    """Compose from parser events as PyYAML's composer does, refusing what exceeds a limit."""
    get = loader.get_event
    get()  # stream start
    document = get()
    if isinstance(document, StreamEndEvent):
        return None, False
    anchors: dict[str, Node] = {}
    measured: dict[int, tuple[int, int]] = {}
    first = _IMPLICIT.get
    open_nodes: list[CollectionNode] = []
    outer: list[list[Node]] = []
    children: list[Node] = []
    expanded = 0
    while True:
        event = get()
        kind = type(event)
        node: Node
        if kind is ScalarEvent:
            tag, value = event.tag, event.value
            if tag is None or tag == "!":
                tag = _STR
                if event.implicit[0]:
                    for resolved, pattern in first(value[:1], _WILDCARD):
                        if pattern.match(value):
                            tag = resolved
                            break
            node = ScalarNode(tag, value, event.start_mark, event.end_mark, event.style)
            if event.anchor is not None:
                _anchor(anchors, event, node)
        elif kind is SequenceStartEvent or kind is MappingStartEvent:
            if len(open_nodes) >= MAX_DEPTH:
                raise _too_deep(event.start_mark.line)
            tag = event.tag
            if kind is SequenceStartEvent:
                node = SequenceNode(_SEQ if tag is None or tag == "!" else tag, [], event.start_mark, None, event.flow_style)
            else:
                node = MappingNode(_MAP if tag is None or tag == "!" else tag, [], event.start_mark, None, event.flow_style)
            _anchor(anchors, event, node)
            open_nodes.append(node)
            outer.append(children)
            children = []
            continue
        elif kind is AliasEvent:
            node = _alias_target(anchors, event)
            size, height = _measure(node, measured)
            line = event.start_mark.line
            if len(open_nodes) + height > MAX_DEPTH:
                raise _too_deep(line, f"alias *{event.anchor} nests")
            expanded += size
            if expanded > MAX_ALIAS_NODES:
                raise DocumentSyntaxError(line + 1, f"aliases stand for more than {MAX_ALIAS_NODES:,} nodes in all (alias *{event.anchor} reaches {expanded:,}); write the data out or share less", "document.alias-expansion")
            children.append(node)
            continue
        elif open_nodes:  # the end of a collection
            node = open_nodes.pop()
            node.end_mark = event.end_mark
            if isinstance(node, MappingNode):
                pairs = iter(children)
                node.value = list(zip(pairs, pairs))
            else:
                node.value = children
            children = outer.pop()
        else:  # the end of the document
            break
        children.append(node)
    after = get()
    if isinstance(after, DocumentStartEvent):
        raise ComposerError("expected a single document in the stream", document.start_mark, "but found another document", after.start_mark)
    return (children[0] if children else None), bool(measured)


def _too_deep(line: int, what: str = "collections nest") -> DocumentSyntaxError:
    return DocumentSyntaxError(line + 1, f"{what} more than {MAX_DEPTH} levels deep here (the limit)", "document.too-deep")


def _anchor(anchors: dict[str, Node], event: Any, node: Node) -> None:
    anchor = event.anchor
    if anchor is None:
        return
    if anchor in anchors:
        raise ComposerError(f"found duplicate anchor {anchor!r}; first occurrence", anchors[anchor].start_mark, "second occurrence", event.start_mark)
    anchors[anchor] = node


def _alias_target(anchors: dict[str, Node], event: Any) -> Node:
    node = anchors.get(event.anchor)
    if node is None:
        raise ComposerError(None, None, f"found undefined alias {event.anchor!r}", event.start_mark)
    if isinstance(node, CollectionNode) and node.end_mark is None:
        raise DocumentSyntaxError(event.start_mark.line + 1, f"alias *{event.anchor} stands inside its own anchor &{event.anchor}: the data would contain itself", "document.recursive-alias")
    return node


def _measure(root: Node, measured: dict[int, tuple[int, int]]) -> tuple[int, int]:
    """(nodes, nesting) of a complete node with its aliases expanded; memoised by identity."""
    known = measured.get(id(root))
    if known is not None:
        return known
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, ready = stack.pop()
        if id(node) in measured:
            continue
        if isinstance(node, ScalarNode):
            measured[id(node)] = (1, 0)
            continue
        kids = [part for pair in node.value for part in pair] if isinstance(node, MappingNode) else node.value
        if ready:
            sizes = [measured[id(kid)] for kid in kids]
            measured[id(node)] = (1 + sum(s for s, _ in sizes), 1 + max((h for _, h in sizes), default=0))
        else:
            stack.append((node, True))
            stack.extend((kid, False) for kid in kids if id(kid) not in measured)
    return measured[id(root)]
