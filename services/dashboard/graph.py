"""The layout of a job's task graph for the dashboard's job page (pure: no I/O).

:func:`layout` turns the steps (each with its parents), their tasks and their states into
JSON-able nodes with positions, and the edges between them, drawn left to right:

- a step's **layer** is the length of the longest path from a root to it (roots are layer 0);
  the layer gives ``x``, the step's rank within its layer gives ``y``;
- **repeated steps are grouped**, so that a fan-out of thousands of steps stays a handful of
  nodes: the quotient is computed top-down, a step's key being its task and the set of the
  *node ids* of its parents; the steps of one layer with equal keys form a class, and a class of
  at least :data:`GROUP_MIN` steps becomes one node (``attack ×5000``) that carries all its
  members and how many are in each state. Because keys use the parents' node ids (not their
  step names), a fan-out of chains ``a_i -> b_i`` collapses into two group nodes. Grouping
  depends only on the graph and the tasks, never on the states, so a job's node set is stable
  while it runs;
- within a layer, nodes are ordered by the barycenter of their parents' positions (one sweep
  from left to right), ties by name; each layer is centred on the tallest one.

Everything is linear in the steps and edges, except the sorts (``O(n log n)``).
"""

from __future__ import annotations

import os
import re
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from shared.states import StepState

GROUP_MIN = 5
"""A class of at least this many equivalent steps of one layer is drawn as one node."""

NODE_WIDTH = 168.0
NODE_HEIGHT = 36.0
LAYER_STEP = 240.0
"""Horizontal distance between the left edges of two consecutive layers."""
ROW_STEP = 52.0
"""Vertical distance between the top edges of two consecutive nodes of one layer."""
MARGIN = 20.0

STATE_PRECEDENCE: tuple[StepState, ...] = (
    StepState.FAILED,
    StepState.RUNNING,
    StepState.WAITING,
    StepState.QUEUED,
    StepState.CANCELLED,
    StepState.PENDING,
    StepState.SKIPPED,
    StepState.SUCCEEDED,
)
"""The state a group node is coloured by is the first of these that any member is in:

a failure is what one must see first; then work in progress (``running``); then dispatched
work that is not running, ``waiting`` (no worker serves the device: an alarm) before plain
``queued``; then ``cancelled`` (the job was stopped); then ``pending`` (not dispatched yet);
then ``skipped``; ``succeeded`` last, so a group turns green only when all its members
succeeded. A state string that is not a :class:`StepState` ranks just before ``pending``.
"""
_RANK: dict[str, float] = {str(state): rank for rank, state in enumerate(STATE_PRECEDENCE)}
_UNKNOWN_RANK = _RANK[StepState.PENDING] - 0.5

_DIGITS = re.compile(r"(\d+)")
_LABEL_TRAILER = "_-:/#[( " + "0123456789"


def state_rank(state: str) -> float:
    """The place of ``state`` in :data:`STATE_PRECEDENCE` (lower is more important)."""
    return _RANK.get(state, _UNKNOWN_RANK)


def dominant_state(states: Mapping[str, int]) -> str:
    """The state to colour a node whose members are in ``states`` (counts) by."""
    present = [state for state, count in states.items() if count > 0]
    if not present:
        return str(StepState.PENDING)
    return min(present, key=lambda state: (state_rank(state), state))


def natural_key(name: str) -> tuple[tuple[int, int, str], ...]:
    """Sort key putting ``a_2`` before ``a_10``."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part)
                 for part in _DIGITS.split(name) if part)


def _member_key(name: str) -> tuple[int, str]:
    """How a group's members are listed: shorter names first, then by name (the natural order
    of names numbered alike, ``a_2`` before ``a_10``, at a fraction of :func:`natural_key`'s cost)."""
    return len(name), name


def group_label(members: Sequence[str], task: str | None) -> str:
    """``prefix ×n``: the members' common name prefix, without trailing separators or digits,
    else their task's name."""
    base = os.path.commonprefix(list(members)).rstrip(_LABEL_TRAILER)
    if not base:
        base = task or "steps"
    return f"{base} ×{len(members)}"


def layout(steps: Mapping[str, Sequence[str]], tasks: Mapping[str, str | None],
           states: Mapping[str, str]) -> dict[str, Any]:
    """Nodes (grouped), edges and positions of the graph whose steps are ``steps`` (each
    mapped to its parents: the steps it depends on), ``tasks`` (each step's plugin task name)
    and ``states`` (each step's state; a missing one is ``pending``).

    Returns ``{"nodes": [...], "edges": [[from_id, to_id], ...], "width", "height",
    "grouped", "node_width", "node_height"}``, each node ``{"id", "label", "steps", "task",
    "layer", "x", "y", "counts", "state"}`` with ``x``/``y`` the top-left corner of its box
    (``node_width`` × ``node_height``). Nodes come by layer, then top to bottom. Parents that
    are not steps are ignored; a cycle (never in a valid document) is broken arbitrarily.
    """
    parents = _known_parents(steps)
    order, parents = _topological(parents)
    layer: dict[str, int] = {}
    for step in order:
        ps = parents[step]
        layer[step] = 1 + max(map(layer.__getitem__, ps)) if ps else 0

    by_layer: dict[int, list[str]] = defaultdict(list)
    for step in order:
        by_layer[layer[step]].append(step)

    # The quotient, top-down: a step's key is its task and its parents' node ids.
    pending = str(StepState.PENDING)
    node_of: dict[str, str] = {}
    nodes: dict[str, dict[str, Any]] = {}
    node_parents: dict[str, frozenset[str]] = {}
    layer_nodes: dict[int, list[str]] = defaultdict(list)
    for depth in sorted(by_layer):
        classes: dict[tuple[str | None, frozenset[str]], list[str]] = defaultdict(list)
        for step in by_layer[depth]:
            key = (tasks.get(step), frozenset(map(node_of.__getitem__, parents[step])))
            classes[key].append(step)
        for (task, parent_ids), members in classes.items():
            if len(members) >= GROUP_MIN:
                members.sort(key=_member_key)
                groups = [(f"g:{members[0]}", group_label(members, task), members)]
            else:
                groups = [(f"s:{step}", step, [step]) for step in members]
            for node_id, label, names in groups:
                counts = dict(Counter(str(states.get(name, pending)) for name in names))
                node_of.update(dict.fromkeys(names, node_id))
                nodes[node_id] = {
                    "id": node_id, "label": label, "steps": names, "task": task, "layer": depth,
                    "x": 0.0, "y": 0.0, "counts": counts, "state": dominant_state(counts),
                }
                node_parents[node_id] = parent_ids
                layer_nodes[depth].append(node_id)

    # Positions: one barycenter sweep from left to right, each layer centred.
    tallest = max((len(ids) for ids in layer_nodes.values()), default=0)
    ordered: list[dict[str, Any]] = []
    name_key = {node_id: natural_key(nodes[node_id]["steps"][0]) for node_id in nodes}
    for depth in sorted(layer_nodes):
        ids = layer_nodes[depth]
        center = {}
        for node_id in ids:
            ys = [nodes[p]["y"] for p in node_parents[node_id]]
            center[node_id] = sum(ys) / len(ys) if ys else 0.0
        ids.sort(key=lambda node_id: (center[node_id], name_key[node_id]))
        offset = (tallest - len(ids)) * ROW_STEP / 2
        for index, node_id in enumerate(ids):
            node = nodes[node_id]
            node["x"] = MARGIN + depth * LAYER_STEP
            node["y"] = MARGIN + offset + index * ROW_STEP
            ordered.append(node)

    edges = sorted({(parent, node_id) for node_id, ids in node_parents.items() for parent in ids})
    if ordered:
        width = 2 * MARGIN + max(layer_nodes) * LAYER_STEP + NODE_WIDTH
        height = 2 * MARGIN + (tallest - 1) * ROW_STEP + NODE_HEIGHT
    else:
        width = height = 0.0
    return {
        "nodes": ordered,
        "edges": [list(edge) for edge in edges],
        "width": width,
        "height": height,
        "grouped": any(len(node["steps"]) > 1 for node in ordered),
        "node_width": NODE_WIDTH,
        "node_height": NODE_HEIGHT,
    }


def _known_parents(steps: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """Each step's distinct parents that are steps (a step is never its own parent)."""
    known: dict[str, list[str]] = {}
    for step, parents in steps.items():
        known[step] = list(dict.fromkeys(p for p in parents if p in steps and p != step))
    return known


def _topological(parents: dict[str, list[str]]) -> tuple[list[str], dict[str, list[str]]]:
    """The steps in an order where every step comes after its parents (Kahn), and the parents,
    minus the edges dropped to break cycles (steps left over are placed in name order, each
    keeping only the parents already placed)."""
    children: dict[str, list[str]] = defaultdict(list)
    missing = {step: len(ps) for step, ps in parents.items()}
    for step, ps in parents.items():
        for p in ps:
            children[p].append(step)
    ready = [step for step, n in missing.items() if n == 0]
    order: list[str] = []
    while ready:
        step = ready.pop()
        order.append(step)
        for child in children.get(step, ()):
            missing[child] -= 1
            if missing[child] == 0:
                ready.append(child)
    if len(order) == len(parents):
        return order, parents
    placed = set(order)
    kept = dict(parents)
    for step in sorted((s for s in parents if s not in placed), key=natural_key):
        kept[step] = [p for p in parents[step] if p in placed]
        placed.add(step)
        order.append(step)
    return order, kept
