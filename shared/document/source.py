"""Reading a job document with the source position of every value.

The document is parsed once with libyaml (when available) into a node tree, within the limits
of :mod:`shared.document.compose`; plain Python data is constructed from it with PyYAML's
*safe* constructor, and the node tree is kept so that any path in the document
(``("graph", "train", "kwargs", "model")``) can be turned into a line number on demand.
Looking up positions lazily keeps validation linear: a 50,000-step document pays for
positions only where there are problems.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import SafeConstructor

from shared.document.compose import (
    MAX_DOCUMENT_BYTES,
    DocumentLoader,
    DocumentSyntaxError,
    check_size,
    compose,
    too_large,
)
from shared.document.construct import construct

__all__ = ["MAX_DOCUMENT_BYTES", "DocPath", "DocumentSyntaxError", "PathPart", "SourceDocument", "SourceMap", "load_file", "parse_text"]

PathPart = Hashable
"""A mapping key (usually a string, but YAML keys may be numbers, dates, null...) or a list index."""
DocPath = tuple[PathPart, ...]

_STR_TAG = "tag:yaml.org,2002:str"


@dataclass
class SourceMap:
    """Maps document paths to 1-based line numbers using the kept YAML node tree."""

    root: yaml.Node | None
    _index: dict[int, dict[Any, tuple[yaml.Node, yaml.Node]]] = field(default_factory=dict)

    def line_of(self, path: Sequence[PathPart]) -> int:
        """The line of the deepest node along ``path`` that exists (1 for an empty document)."""
        node = self.root
        if node is None:
            return 1
        best = node.start_mark.line + 1
        for part in path:
            child = self._child(node, part)
            if child is None:
                break
            node = child
            best = node.start_mark.line + 1
        return best

    def key_line(self, path: Sequence[PathPart]) -> int:
        """The line of the *key* that names ``path[-1]`` (where a person looks for a name)."""
        if not path:
            return self.line_of(path)
        parent = self._walk(path[:-1])
        if isinstance(parent, yaml.MappingNode):
            entry = self._mapping_index(parent).get(path[-1])
            if entry is not None:
                return entry[0].start_mark.line + 1
        return self.line_of(path)

    def _walk(self, path: Sequence[PathPart]) -> yaml.Node | None:
        node = self.root
        for part in path:
            if node is None:
                return None
            node = self._child(node, part)
        return node

    def _child(self, node: yaml.Node, part: PathPart) -> yaml.Node | None:
        if isinstance(node, yaml.MappingNode):
            entry = self._mapping_index(node).get(part)
            return entry[1] if entry is not None else None
        if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            return node.value[part]
        return None

    def _mapping_index(self, node: yaml.MappingNode) -> dict[Any, tuple[yaml.Node, yaml.Node]]:
        index = self._index.get(id(node))
        if index is None:
            index = {}
            for key_node, value_node in node.value:
                index.setdefault(_key_of(key_node), (key_node, value_node))
            self._index[id(node)] = index
        return index

    def duplicate_keys(self, path: Sequence[PathPart]) -> list[tuple[str, int]]:
        """Keys that appear more than once in the mapping at ``path``, with their later lines."""
        node = self._walk(path)
        if not isinstance(node, yaml.MappingNode):
            return []
        seen: set[str] = set()
        duplicates = []
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                if key_node.value in seen:
                    duplicates.append((key_node.value, key_node.start_mark.line + 1))
                seen.add(key_node.value)
        return duplicates


def _key_of(key_node: yaml.Node) -> Any:
    """The key as the data holds it: text for a string, else the constructed value (1.5, None, a date)."""
    if not isinstance(key_node, yaml.ScalarNode):
        return id(key_node)
    if key_node.tag == _STR_TAG:
        return key_node.value
    try:
        key = SafeConstructor().construct_object(key_node, deep=True)
        hash(key)
    except Exception:  # noqa: BLE001 - a key that cannot be built cannot be in a path either
        return id(key_node)
    return key


@dataclass
class SourceDocument:
    """A parsed document: its data, where it came from, and how to locate its parts."""

    data: Any
    name: str
    source_map: SourceMap

    def line_of(self, path: Sequence[PathPart]) -> int:
        return self.source_map.line_of(path)


def parse_text(text: str, name: str = "<document>") -> SourceDocument:
    """Parse YAML or JSON text; raises :class:`DocumentSyntaxError` with a line and a code."""
    check_size(text)
    try:
        loader = DocumentLoader(text)
    except UnicodeEncodeError as error:
        raise DocumentSyntaxError(1, f"the text is not valid Unicode: {error.reason}") from error
    try:
        root, shared = compose(loader, text)
        data = construct(loader, root, shared=shared) if root is not None else None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark is not None else 1
        words = " ".join(filter(None, [error.context, error.problem]))
        raise DocumentSyntaxError(line, f"not valid YAML/JSON: {words}") from error
    except yaml.YAMLError as error:
        raise DocumentSyntaxError(1, f"not valid YAML/JSON: {error}") from error
    except (ValueError, TypeError, OverflowError, RecursionError) as error:
        raise DocumentSyntaxError(1, f"cannot read a value: {error}") from error
    finally:
        loader.dispose()
    return SourceDocument(data=data, name=name, source_map=SourceMap(root))


def load_file(path: str | Path) -> SourceDocument:
    """Read and parse a document file; the name used in problems is the path as given."""
    file_path = Path(path)
    try:
        with file_path.open("rb") as stream:
            raw = stream.read(MAX_DOCUMENT_BYTES + 1)
    except OSError as error:
        raise DocumentSyntaxError(1, f"cannot read file: {error.strerror or error}") from error
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise too_large()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DocumentSyntaxError(1, f"file is not UTF-8 text: {error}") from error
    return parse_text(text, str(path))
