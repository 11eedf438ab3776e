"""Fuzzing the validator: over 10,000 generated documents, every one gives a valid document or
located problems, quickly, and never an exception or an internal failure.

Documents are YAML text built from fragments (tags PyYAML cannot always build, anchors and
aliases, odd keys, block and flow styles), Dioptra-like data and a complete Dioptra document
with random changes (keys renamed to numbers, dates or null, values replaced), dumped as YAML
or JSON, and documents deep, aliased or bombed to drawn sizes; most are also mutated by
inserting, cutting or repeating pieces of text. Each example checks several documents
(900 x 5 + 400 x 5 + 500 x 5 + 200 x 6 = 10,200 in all), which keeps the whole under a
minute. The same texts check that the event composer and the fast constructor agree with
PyYAML wherever PyYAML builds a value."""

from __future__ import annotations

import copy
import datetime
import itertools
import json
import math
import time
from collections.abc import Callable
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.document import check_text
from shared.document.compose import (
    MAX_ALIAS_NODES,
    MAX_DEPTH,
    DocumentLoader,
    DocumentSyntaxError,
    compose_within_limits,
    provably_shallow,
)
from shared.document.source import parse_text
from tests.unit.conftest import fixture_catalog

CATALOG = fixture_catalog()
PER_EXAMPLE = 5
SLOW_SECONDS = 5.0
"""No generated document may take this long (the bomb of issue 7 took 107 s)."""

WORDS = ["graph", "tasks", "parameters", "types", "artifact_inputs", "artifact_outputs", "s", "t", "tp_echo", "tp_add",
         "echo", "task", "args", "kwargs", "dependencies", "plugin", "inputs", "outputs", "type", "default", "name",
         "value", "contents", "list", "tuple", "union", "mapping", "is_a", "required", "tp_tasks.tp_echo", "a", "b"]
SCALARS = WORDS + [
    "$s", "$t.value", "$$x", "$", "1", "-2", "1.5", "1e3", ".inf", "-.inf", ".nan", "0x1F", "0o17", "017", "1_000",
    "1:30", "0b101", "2001-01-01", "2001-12-14t21:59:43.10-05:00", "2001-12-14 21:59:43.10", "null", "~", "true",
    "yes", "Off", "''", '""', '"\\u0041\\n"', "'it''s'", '"a\\"b"', "!!timestamp 2001-01-01{", "!!float", "!!float ''",
    "!!int", "!!int 0x", "!!bool maybe", "!!binary aGk=", "!!binary '!!!'", "!!str 1", "!!null x", "!!timestamp 2001-13-45",
    "!!timestamp '2001-01-01 00:00:00 +99:00'", "!!float ._", "!foo bar", "!!python/name:os.system", "!!set {a, b}",
    "!!omap [a: 1]", "!!omap [a]", "!!pairs [[a]]", "!!seq x", "!!map x", "!!str [a]", "<<", "=", "|", ">-", "#", "é", "\t",
]
ODD_KEYS = ["1", "1.5", "-2", "null", "~", "true", "no", "2001-01-01", "2001-12-14 21:59:43.10", ".inf", ".nan", "!!int 3",
            "!!binary aGk=", "? [a, b]", "? {a: 1}", "<<", "=", "''", "!!null ''", "!!timestamp x", "? !!set {a}"]
FRAGMENTS = ["[", "]", "{", "}", ",", ": ", "- ", "? ", "&a ", "*a", "&b ", "*b", "!!float ", "!!timestamp ", "\n", "\n  ",
             "#", "'", '"', "|\n", "---\n", "...\n", "%YAML 1.1\n", "<<: *a\n", "\x00", "\ufeff", "\u2028", "\r", "\\", "@", "`"]
ANCHORS = ["a", "b", "c"]
SERIAL = itertools.count()

PLAIN = ["1", "-2", "1.5", "x", "hello", "$s", "$t", "$s.value", "$p", "true", "null", "''", "'q'", '"dq"', "2001-01-01"]
TASKS = ["tp_echo", "tp_echo", "tp_collect", "tp_add", "tp_stamp", "tp_pair", "echo", "nosuch"]
SECTIONS = {
    "tasks": "{echo: {plugin: tp_tasks.tp_echo, inputs: [{value: any}], outputs: {value: any}}}",
    "parameters": "{p: 1, q: {type: integer, default: 2}}",
    "types": "{vec: {list: number}, u: {union: [integer, string]}}",
    "artifact_inputs": "{data: {x: any}}",
    "artifact_outputs": "{out: {contents: $s, task: {name: tp_echo, args: {a: 1}}}}",
    "artifact_outputs ": "{out: {contents: $s, task: {name: tp_echo, args: {1.5: 1, null: 2}}}}",
    "types ": "{m: {mapping: {1.5: integer, null: [string]}}, n: {tuple: [{1: x}]}}",
    "parameters ": "[p, 1.5, null, {a: 1}]",
}


def leaves(odd: st.SearchStrategy[str]) -> st.SearchStrategy[tuple]:
    return st.tuples(st.just("scalar"), st.sampled_from(PLAIN) | st.sampled_from(PLAIN) | odd)


scalar_text = st.sampled_from(SCALARS) | st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=6)
key_text = st.sampled_from(WORDS) | st.sampled_from(WORDS) | st.sampled_from(ODD_KEYS)
tree = st.deferred(lambda: st.one_of(
    leaves(scalar_text),
    st.tuples(st.just("alias"), st.sampled_from(ANCHORS)),
    st.tuples(st.just("anchor"), st.sampled_from(ANCHORS), tree),
    st.tuples(st.just("seq"), st.lists(tree, max_size=4)),
    st.tuples(st.just("map"), st.lists(st.tuples(key_text, tree), max_size=4)),
))
step = st.tuples(st.sampled_from(TASKS), tree, st.lists(st.sampled_from(["s", "t", "u", "nope"]), max_size=2)).map(
    lambda parts: ("map", [(parts[0], parts[1])] + ([("dependencies", ("seq", [("scalar", d) for d in parts[2]]))] if parts[2] else [])))
graph = st.lists(st.tuples(st.sampled_from(["s", "t", "u"]) | key_text, step | tree), min_size=1, max_size=4).map(lambda steps: ("map", steps))
sections = st.lists(st.sampled_from(sorted(SECTIONS)), max_size=3, unique=True).map(lambda names: [(n.strip(), ("scalar", SECTIONS[n])) for n in names])
documents = st.tuples(graph, sections, st.lists(st.tuples(key_text, tree), max_size=1)).map(
    lambda parts: ("map", [("graph", parts[0]), *parts[1], *parts[2]]))


def anchored(node: tuple, names: dict[str, str] | None = None) -> tuple:
    """The tree with unique anchor names and aliases only to anchors already met (else a scalar)."""
    names = {} if names is None else names
    kind = node[0]
    if kind == "alias":
        return ("alias", names[node[1]]) if node[1] in names else ("scalar", node[1])
    if kind == "anchor":
        if node[2][0] in ("alias", "anchor"):
            return anchored(node[2], names)
        unique = names[node[1]] = f"{node[1]}{next(SERIAL)}"
        return ("anchor", unique, anchored(node[2], names))
    if kind == "seq":
        return ("seq", [anchored(item, names) for item in node[1]])
    if kind == "map":
        return ("map", [(key, anchored(value, names)) for key, value in node[1]])
    return node


def flow(node: tuple) -> str:
    kind = node[0]
    if kind == "scalar":
        return node[1]
    if kind == "alias":
        return f"*{node[1]}"
    if kind == "anchor":
        return f"&{node[1]} {flow(node[2])}"
    if kind == "seq":
        return "[" + ", ".join(flow(item) for item in node[1]) + "]"
    return "{" + ", ".join(f"{key}: {flow(value)}" for key, value in node[1]) + "}"


def block(node: tuple, indent: int = 0) -> str:
    pad = " " * indent
    kind = node[0]
    if kind == "seq" and node[1]:
        return "".join(f"{pad}-" + _block_child(item, indent + 2) for item in node[1])
    if kind == "map" and node[1]:
        return "".join(f"{pad}{key}:" + _block_child(value, indent + 2) for key, value in node[1])
    return pad + flow(node) + "\n"


def _block_child(node: tuple, indent: int) -> str:
    if node[0] in ("seq", "map") and node[1]:
        return "\n" + block(node, indent)
    if node[0] == "anchor" and node[2][0] in ("seq", "map") and node[2][1]:
        return f" &{node[1]}\n" + block(node[2], indent)
    return " " + flow(node) + "\n"


def mutate(text: str, edits: list[tuple[float, int, str]]) -> str:
    for where, kind, fragment in edits:
        at = int(where * len(text))
        if kind == 0:
            text = text[:at] + fragment + text[at:]
        elif kind == 1:
            text = text[:at] + text[at + len(fragment):]
        else:
            text = text[:at] + text[at:at + 8] * 3 + text[at:]
    return text


edits = st.lists(st.tuples(st.floats(0, 1), st.integers(0, 2), st.sampled_from(FRAGMENTS)), max_size=3)


@st.composite
def fragment_documents(draw: st.DrawFn) -> list[str]:
    node = anchored(draw(documents))
    texts = [flow(node), block(node)]
    texts += [mutate(draw(st.sampled_from(texts)), draw(edits)) for _ in range(PER_EXAMPLE - len(texts))]
    return texts


@st.composite
def shaped_documents(draw: st.DrawFn) -> list[str]:
    """Deep nesting, alias bombs, recursive anchors and merge chains of drawn sizes."""
    depth = draw(st.integers(1, 400))
    levels, width = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    if 20_000 < 2 * width ** (levels - 1) <= 2 * MAX_ALIAS_NODES:
        levels += 5  # a bomb just inside the limit validates its million nodes: keep those few
    lines = ["parameters:", "  l0: &l0 [x, x]"] + [f"  l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]" for i in range(1, levels)]
    merges = ["parameters:", "  m0: &m0 {a: 1}"] + [f"  m{i}: &m{i} {{<<: *m{i - 1}, k{i}: {i}}}" for i in range(1, depth)]
    texts = [
        "graph:\n  s: {tp_echo: [" + "[" * depth + "]" * depth + "]}\n",
        "graph:\n  s:\n    tp_echo:\n    - " + "- " * depth + "x\n",
        "graph:\n  s: {tp_echo: [" + "{a: " * depth + "*b" * draw(st.booleans()) + "}" * depth + "]}\n",
        "\n".join(lines) + f"\ngraph:\n  s: {{tp_echo: [*l{levels - 1}]}}\n",
        "\n".join(merges) + f"\ngraph:\n  s: {{tp_echo: [*m{depth - 1}]}}\n",
        "graph:\n  s: &s {tp_echo: {value: " + "[" * (depth % 50) + "*s" + "]" * (depth % 50) + "}}\n",
    ]
    return [mutate(text, draw(edits)) if draw(st.booleans()) else text for text in texts]


odd_key = st.sampled_from([1.5, None, True, 7, datetime.date(2001, 1, 1), datetime.datetime(2001, 1, 1, 12), b"hi", -0.0])
def containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    keys = st.sampled_from(WORDS) | st.text(max_size=4) | odd_key
    return st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4)


values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8) | st.sampled_from(SCALARS), containers, max_leaves=25,
)


@st.composite
def dioptra_documents(draw: st.DrawFn) -> list[str]:
    steps = st.dictionaries(st.sampled_from(["s", "t", "u"]) | odd_key, st.dictionaries(st.sampled_from(TASKS), values, min_size=1, max_size=1) | values, max_size=4)
    data = {"graph": draw(steps), **draw(st.dictionaries(st.sampled_from(WORDS[:6]) | odd_key, values, max_size=3))}
    texts = [yaml.safe_dump(data, sort_keys=False), yaml.safe_dump(data, default_flow_style=True, sort_keys=False)]
    texts.append(json.dumps(data, default=str, skipkeys=True))
    texts += [mutate(draw(st.sampled_from(texts)), draw(edits)) for _ in range(PER_EXAMPLE - len(texts))]
    return texts


TEMPLATE: dict[str, Any] = {
    "types": {"vec": {"list": "number"}, "pt": {"mapping": {"x": "number", "y": "number"}}, "id": {"is_a": "string"},
              "u": {"union": ["integer", "string", {"tuple": ["integer", "vec"]}]}, "kv": {"mapping": ["string", "integer"]}, "none": None},
    "parameters": {"n": 2, "p": {"type": "pt", "default": {"x": 1, "y": 2}}, "req": {"type": "u"}, "l": [1, 2]},
    "tasks": {
        "add": {"plugin": "tp_tasks.tp_add", "inputs": [{"a": "number"}, {"name": "b", "type": "number", "required": False}], "outputs": {"sum": "number"}},
        "echo": {"plugin": "tp_tasks.tp_echo", "inputs": [{"value": "any"}], "outputs": {"value": "any"}},
        "pair": {"plugin": "tp_tasks.tp_pair", "inputs": [{"a": "any"}, {"b": "any"}], "outputs": [{"first": "any"}, {"second": "pt"}]},
    },
    "artifact_inputs": {"data": {"x": "any"}, "both": [{"a": "vec"}, {"b": "any"}]},
    "graph": {
        "one": {"add": ["$n", 2]}, "two": {"add": {"a": "$one", "b": 10}},
        "three": {"task": "pair", "args": ["$two"], "kwargs": {"b": {"k": ["$data", "$$lit", "$both.b"]}}, "dependencies": ["one"]},
        "four": {"echo": "$three.second"}, "five": {"echo": {"value": "$p"}, "dependencies": "four"},
    },
    "artifact_outputs": {"out": {"contents": "$four", "task": {"name": "echo", "args": {"value": 1}}}},
}


def perturb(draw: st.DrawFn, data: Any) -> Any:
    """One random change somewhere in ``data``: a key renamed (often to a non-string), a value replaced, an entry added or dropped."""
    while isinstance(data, (dict, list)) and data and draw(st.integers(0, 2)):
        data = data[draw(st.sampled_from(list(data) if isinstance(data, dict) else range(len(data))))]
    change = draw(st.integers(0, 3))
    if isinstance(data, dict) and data:
        key = draw(st.sampled_from(list(data)))
        if change == 0:
            data[draw(odd_key | st.sampled_from(WORDS))] = data.pop(key)
        elif change == 1:
            data[key] = draw(values)
        elif change == 2:
            data[draw(odd_key | st.sampled_from(WORDS))] = draw(values)
        else:
            del data[key]
    elif isinstance(data, list) and data:
        index = draw(st.integers(0, len(data) - 1))
        if change < 2:
            data[index] = draw(values)
        elif change == 2:
            data.insert(index, draw(values))
        else:
            del data[index]


@st.composite
def perturbed_documents(draw: st.DrawFn) -> list[str]:
    data = copy.deepcopy(TEMPLATE)
    for _ in range(draw(st.integers(1, 3))):
        perturb(draw, data)
    texts = [yaml.safe_dump(data, sort_keys=False), yaml.safe_dump(data, default_flow_style=True, sort_keys=False)]
    texts.append(json.dumps(data, default=str, skipkeys=True))
    texts += [mutate(draw(st.sampled_from(texts)), draw(edits)) for _ in range(PER_EXAMPLE - len(texts))]
    return texts


def assert_only_problems(text: str) -> None:
    started = time.perf_counter()
    result = check_text(text, "fuzz.yaml", CATALOG)
    assert time.perf_counter() - started < SLOW_SECONDS, text[:300]
    assert (result.document is None) == any(issue.severity.value == "error" for issue in result.issues)
    for issue in result.issues:
        assert issue.code != "document.internal", (issue.message, text[:300])
        assert issue.line is not None and issue.line >= 1
        assert issue.format("fuzz.yaml").startswith(f"fuzz.yaml:{issue.line}: ")
    if len(text) < 3_000:
        assert_agrees_with_pyyaml(text)


def assert_agrees_with_pyyaml(text: str) -> None:
    """Where PyYAML builds a value we build the same one, unless a limit refuses it first."""
    try:
        ours: Any = parse_text(text).data
    except DocumentSyntaxError as refused:
        ours = refused
    try:
        theirs = yaml.load(text, Loader=yaml.CSafeLoader)
    except (yaml.YAMLError, ValueError, TypeError, AttributeError, IndexError, KeyError, OverflowError, RecursionError):
        assert isinstance(ours, DocumentSyntaxError), text
        return
    if isinstance(ours, DocumentSyntaxError):
        assert ours.code in ("document.too-deep", "document.alias-expansion", "document.recursive-alias"), (ours.message, text)
        return
    assert same(ours, theirs), text
    assert same_nodes(composed(text), yaml.CSafeLoader(text).get_single_node())


def composed(text: str) -> Any:
    loader = DocumentLoader(text)
    try:
        return compose_within_limits(loader)[0]
    finally:
        loader.dispose()


def same(ours: Any, theirs: Any, seen: set[tuple[int, int]] | None = None) -> bool:
    """Equal values, NaN equal to NaN; a pair of shared (aliased) containers is compared once."""
    seen = set() if seen is None else seen
    if isinstance(ours, float) and isinstance(theirs, float) and math.isnan(ours):
        return math.isnan(theirs)
    if type(ours) is not type(theirs):
        return False
    if isinstance(ours, (dict, list)):
        if (id(ours), id(theirs)) in seen:
            return True
        seen.add((id(ours), id(theirs)))
    if isinstance(ours, dict):
        return list(map(repr, ours)) == list(map(repr, theirs)) and all(same(ours[k], theirs[k], seen) for k in ours)
    if isinstance(ours, list):
        return len(ours) == len(theirs) and all(same(a, b, seen) for a, b in zip(ours, theirs))
    return repr(ours) == repr(theirs)


def same_nodes(ours: Any, theirs: Any, seen: set[tuple[int, int]] | None = None) -> bool:
    seen = set() if seen is None else seen
    if ours is None or theirs is None:
        return ours is theirs
    if (id(ours), id(theirs)) in seen:
        return True
    seen.add((id(ours), id(theirs)))
    if (type(ours), ours.tag, ours.start_mark.line, ours.start_mark.column) != (type(theirs), theirs.tag, theirs.start_mark.line, theirs.start_mark.column):
        return False
    if isinstance(ours, yaml.ScalarNode):
        return (ours.value, ours.style) == (theirs.value, theirs.style)
    if ours.flow_style != theirs.flow_style or len(ours.value) != len(theirs.value):
        return False
    if isinstance(ours, yaml.MappingNode):
        return all(same_nodes(a, b, seen) and same_nodes(c, d, seen) for (a, c), (b, d) in zip(ours.value, theirs.value))
    return all(same_nodes(a, b, seen) for a, b in zip(ours.value, theirs.value))


def compact(node: tuple, column: int) -> str:
    """Block text in compact forms (``- - a``, ``- k: v``, indentless sequences), first line already at ``column``."""
    kind, lines = node[0], []
    if kind == "seq" and node[1]:
        for item in node[1]:
            lines.append("- " + compact(item, column + 2))
    elif kind == "map" and node[1]:
        for key, value in node[1]:
            if value[0] == "seq" and value[1]:
                lines.append(f"{key}:\n" + " " * column + compact(value, column))
            elif value[0] == "map" and value[1]:
                lines.append(f"{key}:\n" + " " * (column + 2) + compact(value, column + 2))
            else:
                lines.append(f"{key}: {flow(value)}")
    else:
        return flow(node)
    return ("\n" + " " * column).join(lines)


def height(node: Any) -> int:
    if isinstance(node, yaml.ScalarNode):
        return 0
    children = [part for pair in node.value for part in pair] if isinstance(node, yaml.MappingNode) else node.value
    return 1 + max(map(height, children), default=0)


plain_tree = st.recursive(
    st.tuples(st.just("scalar"), st.sampled_from(PLAIN[:9])),
    lambda children: st.tuples(st.just("seq"), st.lists(children, min_size=1, max_size=3))
    | st.tuples(st.just("map"), st.lists(st.tuples(st.sampled_from(WORDS[:8]), children), min_size=1, max_size=3)),
    max_leaves=40,
)


@given(plain_tree, st.booleans())
@settings(max_examples=300, deadline=None)
def test_the_shallow_bound_holds(node: tuple, in_flow: bool) -> None:
    """Nesting never exceeds twice the longest line prefix of spaces and indicators plus the brackets."""
    text = (flow(node) if in_flow else compact(node, 0)) + "\n"
    root = yaml.CSafeLoader(text).get_single_node()
    prefix = max(len(line) - len(line.lstrip("\ufeff \t?:-")) for line in text.split("\n"))
    assert height(root) <= 2 * (prefix + 1) + 2 * text.count("[") + text.count("{"), text
    if provably_shallow(text):
        assert height(root) <= MAX_DEPTH


FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])


def fuzz(documents: st.SearchStrategy[list[str]], examples: int) -> Callable[[], None]:
    """A test that feeds every generated text to the validator, which may only report problems."""

    @given(documents)
    @settings(FUZZ, max_examples=examples)
    def test(texts: list[str]) -> None:
        for text in texts:
            assert_only_problems(text)

    return test


# 900 + 400 + 500 + 200 examples of several documents each: over 10,000 documents a run.
test_fragment_documents_only_produce_problems = fuzz(fragment_documents(), 900)
test_dioptra_like_documents_only_produce_problems = fuzz(dioptra_documents(), 400)
test_perturbed_dioptra_documents_only_produce_problems = fuzz(perturbed_documents(), 500)
test_deep_and_aliased_documents_only_produce_problems = fuzz(shaped_documents(), 200)
