"""The job page's graph layout (``services/dashboard/graph.py``).

Over random DAGs (few tasks and few parents, so that classes of equivalent steps, and thus
groups, are common): every step is in exactly one node; there is an edge between two nodes iff
a member of one is a parent of a member of the other; layers are the longest paths and
strictly increase along edges; no two nodes share a position; a group never mixes tasks,
layers or parent nodes; counts are the members' states; the node set and positions do not
depend on the states. Then the shapes the dashboard must keep usable (a 5,000-step fan-out,
a fan-out of chains, a long chain) and their timing, and the state precedence.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.dashboard.graph import (
    GROUP_MIN,
    STATE_PRECEDENCE,
    dominant_state,
    group_label,
    layout,
)
from shared.states import StepState

STATES = [str(state) for state in StepState]
Graph = tuple[dict[str, list[str]], dict[str, str | None], dict[str, str]]


@st.composite
def dags(draw: st.DrawFn) -> Graph:
    n = draw(st.integers(min_value=0, max_value=40))
    names = [f"s{i}" for i in range(n)]
    steps: dict[str, list[str]] = {}
    tasks: dict[str, str | None] = {}
    states: dict[str, str] = {}
    for i, name in enumerate(names):
        # Parents among a few recent steps (or none): equal keys, and so groups, are common.
        pool = names[max(0, i - 4):i]
        parents = draw(st.lists(st.sampled_from(pool), max_size=2, unique=True)) if pool else []
        steps[name] = parents
        tasks[name] = draw(st.sampled_from(["a", "b", None]))
        if draw(st.booleans()):
            states[name] = draw(st.sampled_from(STATES))
    return steps, tasks, states


def longest_paths(steps: dict[str, list[str]]) -> dict[str, int]:
    depth: dict[str, int] = {}

    def visit(step: str) -> int:
        if step not in depth:
            depth[step] = max((visit(p) + 1 for p in steps[step]), default=0)
        return depth[step]

    for step in steps:
        visit(step)
    return depth


@given(dags())
@settings(max_examples=400, deadline=None)
def test_layout_is_a_faithful_quotient(graph: Graph) -> None:
    steps, tasks, states = graph
    result = layout(steps, tasks, states)
    json.dumps(result)
    nodes = result["nodes"]
    by_id = {node["id"]: node for node in nodes}
    assert len(by_id) == len(nodes), "node ids are unique"

    node_of: dict[str, str] = {}
    for node in nodes:
        for step in node["steps"]:
            assert step not in node_of, f"{step} is in two nodes"
            node_of[step] = node["id"]
    assert set(node_of) == set(steps), "every step is in exactly one node"

    expected_edges = {(node_of[p], node_of[s]) for s, ps in steps.items() for p in ps}
    edges = [tuple(edge) for edge in result["edges"]]
    assert len(edges) == len(set(edges)), "edges are deduplicated"
    assert set(edges) == expected_edges

    depth = longest_paths(steps)
    for node in nodes:
        members = node["steps"]
        assert {depth[s] for s in members} == {node["layer"]}, "one layer per node, the longest path"
        assert {tasks[s] for s in members} == {node["task"]}, "one task per node"
        assert len({frozenset(node_of[p] for p in steps[s]) for s in members}) == 1, "one parent set"
        assert len(members) == 1 or len(members) >= GROUP_MIN
        assert node["counts"] == dict(Counter(states.get(s, "pending") for s in members))
        assert sum(node["counts"].values()) == len(members)
        assert node["state"] == dominant_state(node["counts"])
        if len(members) == 1:
            assert node["label"] == members[0]
        assert 0 <= node["x"] and node["x"] + result["node_width"] <= result["width"]
        assert 0 <= node["y"] and node["y"] + result["node_height"] <= result["height"]
    for parent, child in edges:
        assert by_id[parent]["layer"] < by_id[child]["layer"]
        assert by_id[parent]["x"] < by_id[child]["x"]
    positions = [(node["x"], node["y"]) for node in nodes]
    assert len(set(positions)) == len(positions), "no two nodes share a position"
    assert result["grouped"] == any(len(node["steps"]) > 1 for node in nodes)


@given(dags(), st.lists(st.sampled_from(STATES), min_size=40, max_size=40))
@settings(max_examples=100, deadline=None)
def test_nodes_and_positions_do_not_depend_on_states(graph: Graph, others: list[str]) -> None:
    steps, tasks, states = graph

    def shape(states: dict[str, str]) -> list[tuple[Any, ...]]:
        return [(n["id"], n["label"], n["steps"], n["x"], n["y"]) for n in layout(steps, tasks, states)["nodes"]]

    assert shape(states) == shape(dict(zip(steps, others, strict=False)))


def fan_out(n: int, states: Callable[[int], str] | None = None) -> Graph:
    steps: dict[str, list[str]] = {"root": []}
    steps.update({f"attack_{i}": ["root"] for i in range(n)})
    steps["sink"] = [f"attack_{i}" for i in range(n)]
    tasks: dict[str, str | None] = {s: "attack" if s.startswith("attack") else s for s in steps}
    return steps, tasks, {f"attack_{i}": states(i) for i in range(n)} if states else {}


def best_of(runs: int, graph: Graph) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        layout(*graph)
        times.append(time.perf_counter() - start)
    return min(times)


def test_a_5000_step_fan_out_is_three_nodes() -> None:
    graph = fan_out(5000, lambda i: "failed" if i == 7 else "running" if i % 2 else "succeeded")
    result = layout(*graph)
    assert [node["label"] for node in result["nodes"]] == ["root", "attack ×5000", "sink"]
    root, group, sink = result["nodes"]
    assert group["id"] == "g:attack_0" and group["task"] == "attack" and group["layer"] == 1
    assert group["steps"][:3] == ["attack_0", "attack_1", "attack_2"] and len(group["steps"]) == 5000
    assert group["counts"] == {"succeeded": 2500, "running": 2499, "failed": 1}
    assert group["state"] == "failed"
    assert root["counts"] == {"pending": 1} and root["state"] == "pending"
    assert result["edges"] == [["g:attack_0", "s:sink"], ["s:root", "g:attack_0"]]
    assert result["grouped"] is True
    assert sink["layer"] == 2


def test_a_fan_out_of_chains_collapses_into_two_groups() -> None:
    steps: dict[str, list[str]] = {"root": []}
    for i in range(300):
        steps[f"train_{i}"] = ["root"]
        steps[f"score_{i}"] = [f"train_{i}"]
    tasks: dict[str, str | None] = {s: s.split("_")[0] for s in steps}
    result = layout(steps, tasks, {"score_3": "failed"})
    assert [(n["label"], n["state"]) for n in result["nodes"]] == [
        ("root", "pending"), ("train ×300", "pending"), ("score ×300", "failed")]
    assert result["edges"] == [["g:train_0", "g:score_0"], ["s:root", "g:train_0"]]


def test_small_classes_and_different_tasks_stay_apart() -> None:
    steps: dict[str, list[str]] = {"root": []}
    steps.update({f"x{i}": ["root"] for i in range(GROUP_MIN - 1)})
    steps.update({f"y{i}": ["root"] for i in range(GROUP_MIN)})
    tasks: dict[str, str | None] = {s: s[0] for s in steps}
    tasks["y0"] = "other"
    result = layout(steps, tasks, {})
    assert result["grouped"] is False
    assert len(result["nodes"]) == len(steps)
    assert [n["id"] for n in result["nodes"] if n["layer"] == 1] == [
        "s:x0", "s:x1", "s:x2", "s:x3", "s:y0", "s:y1", "s:y2", "s:y3", "s:y4"]


def test_order_within_a_layer_follows_the_parents() -> None:
    # b's children: z under b (the lower parent) goes below a's child y, despite the names.
    steps: dict[str, list[str]] = {"a": [], "b": [], "z": ["a"], "y": ["b"]}
    result = layout(steps, {}, {})
    ys = {n["id"]: n["y"] for n in result["nodes"]}
    assert ys["s:a"] < ys["s:b"] and ys["s:z"] < ys["s:y"]


def test_group_labels() -> None:
    assert group_label([f"attack_{i}" for i in range(10, 15)], "fgm") == "attack ×5"
    assert group_label(["p", "q", "r", "s", "t"], "fgm") == "fgm ×5"
    assert group_label(["1", "2", "3", "4", "5"], None) == "steps ×5"


def test_odd_inputs() -> None:
    assert layout({}, {}, {}) == {"nodes": [], "edges": [], "width": 0.0, "height": 0.0, "grouped": False,
                                  "node_width": layout({"a": []}, {}, {})["node_width"],
                                  "node_height": layout({"a": []}, {}, {})["node_height"]}
    # Unknown parents are ignored; a parent named twice is one edge; a cycle does not hang.
    result = layout({"a": ["ghost", "b", "b"], "b": []}, {}, {})
    assert result["edges"] == [["s:b", "s:a"]]
    result = layout({"a": ["c"], "b": ["a"], "c": ["b"], "d": ["c"]}, {}, {})
    assert sorted(s for n in result["nodes"] for s in n["steps"]) == ["a", "b", "c", "d"]
    for parent, child in result["edges"]:
        layers = {n["id"]: n["layer"] for n in result["nodes"]}
        assert layers[parent] < layers[child]


def test_state_precedence() -> None:
    assert [str(s) for s in STATE_PRECEDENCE] == [
        "failed", "running", "waiting", "queued", "cancelled", "pending", "skipped", "succeeded"]
    assert set(STATE_PRECEDENCE) == set(StepState), "every state has a place"
    assert dominant_state({"succeeded": 10}) == "succeeded"
    assert dominant_state({"succeeded": 10, "skipped": 1}) == "skipped"
    assert dominant_state({"succeeded": 10, "pending": 1}) == "pending"
    assert dominant_state({"pending": 3, "cancelled": 1}) == "cancelled"
    assert dominant_state({"cancelled": 3, "queued": 1}) == "queued"
    assert dominant_state({"queued": 3, "waiting": 1}) == "waiting"
    assert dominant_state({"waiting": 3, "running": 1}) == "running"
    assert dominant_state({"running": 3, "failed": 1, "succeeded": 9}) == "failed"
    assert dominant_state({"failed": 0, "succeeded": 2}) == "succeeded"
    assert dominant_state({"mystery": 1, "pending": 1}) == "mystery"
    assert dominant_state({"mystery": 1, "cancelled": 1}) == "cancelled"
    assert dominant_state({}) == "pending"
    states = {f"attack_{i}": "succeeded" for i in range(5000)}
    (_, group, _) = layout(fan_out(5000)[0], fan_out(5000)[1], states)["nodes"]
    assert group["state"] == "succeeded", "a group is green once all its members succeeded"
    states["attack_4999"] = "running"
    (_, group, _) = layout(fan_out(5000)[0], fan_out(5000)[1], states)["nodes"]
    assert group["state"] == "running"


def test_timing_of_a_5000_step_fan_out() -> None:
    assert best_of(3, fan_out(5000, lambda i: "running")) < 0.1


def test_timing_of_a_2000_step_chain() -> None:
    steps = {f"c{i}": [f"c{i - 1}"] if i else [] for i in range(2000)}
    graph: Graph = (steps, {s: "t" for s in steps}, {s: "succeeded" for s in steps})
    assert best_of(3, graph) < 0.5
    assert len(layout(*graph)["nodes"]) == 2000


def test_timing_of_a_wide_ungroupable_layer() -> None:
    # 2,000 siblings of distinct tasks: no groups, one sort of one big layer.
    steps: dict[str, list[str]] = {"root": []}
    steps.update({f"s{i}": ["root"] for i in range(2000)})
    graph: Graph = (steps, {s: s for s in steps}, {})
    assert best_of(3, graph) < 0.5
