"""The DAG as text: Mermaid (renders in GitHub and most docs tools) or Graphviz DOT."""

from __future__ import annotations

import json
import re

from shared.document.model import JobDocument

_UNSAFE = re.compile(r"[^A-Za-z0-9_]")


def _node_id(name: str, ids: dict[str, str]) -> str:
    node = ids.get(name)
    if node is None:
        node = "s_" + _UNSAFE.sub("_", name) + f"_{len(ids)}" if _UNSAFE.search(name) else name
        ids[name] = node
    return node


def to_mermaid(document: JobDocument) -> str:
    ids: dict[str, str] = {}
    lines = ["flowchart TD"]
    for name, step in document.steps.items():
        device = document.tasks[step.task].device
        label = f"{name}<br/><small>{step.task} · {device}</small>".replace('"', "#quot;")
        lines.append(f'    {_node_id(name, ids)}["{label}"]')
    for name, step in document.steps.items():
        for upstream in step.dependencies:
            lines.append(f"    {_node_id(upstream, ids)} --> {_node_id(name, ids)}")
    return "\n".join(lines) + "\n"


def to_dot(document: JobDocument) -> str:
    lines = ["digraph job {", "    rankdir=TB;", "    node [shape=box];"]
    for name, step in document.steps.items():
        device = document.tasks[step.task].device
        label = json.dumps(f"{name}\n{step.task} ({device})")
        lines.append(f"    {json.dumps(name)} [label={label}];")
    for name, step in document.steps.items():
        for upstream in step.dependencies:
            lines.append(f"    {json.dumps(upstream)} -> {json.dumps(name)};")
    lines.append("}")
    return "\n".join(lines) + "\n"
