"""Python data from a composed node tree: PyYAML's safe construction, faster where it is plain.

PyYAML constructs every node through generators, memo tables and an ABC check per key,
which makes construction the largest part of reading a big document. Strings, sequences and
mappings with standard tags are built here directly (scalars of other standard tags through
the loader's own constructors); any other node (merge keys, ``!!set``, ``!!omap``, unknown
tags, collection keys) is handed to PyYAML with its whole subtree, so results and errors are
PyYAML's. A tree with aliases is constructed by PyYAML alone: it shares one object per
anchor. Recursion is bounded by the nesting limit of :mod:`shared.document.compose`.
"""

from __future__ import annotations

from typing import Any

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

_STR, _SEQ, _MAP = "tag:yaml.org,2002:str", "tag:yaml.org,2002:seq", "tag:yaml.org,2002:map"
_SCALAR_TAGS = frozenset(f"tag:yaml.org,2002:{name}" for name in ("null", "bool", "int", "float", "timestamp", "binary"))


def construct(loader: Any, root: Node, *, shared: bool) -> Any:
    """The data of ``root``; ``shared`` when the tree has aliases (nodes reached twice)."""
    if shared:
        return loader.construct_document(root)
    constructors = loader.yaml_constructors

    def build(node: Node) -> Any:
        cls = node.__class__
        tag = node.tag
        if cls is ScalarNode:
            if tag == _STR:
                return node.value
            if tag in _SCALAR_TAGS:
                return constructors[tag](loader, node)
        elif cls is SequenceNode:
            if tag == _SEQ:
                return [build(item) for item in node.value]
        elif cls is MappingNode and tag == _MAP:
            pairs = node.value
            for key, _ in pairs:
                if key.__class__ is not ScalarNode or (key.tag != _STR and key.tag not in _SCALAR_TAGS):
                    return loader.construct_object(node, deep=True)
            return {build(key): build(value) for key, value in pairs}
        return loader.construct_object(node, deep=True)

    return build(root)
