"""The pieces the deployment checks are built from: the Kustomize subset, PromQL scanning,
Dockerfile stages, Compose durations."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.deploy_check import promql
from tests.support.deploy_check.compose_model import duration_s
from tests.support.deploy_check.dockerfile import effective, parse
from tests.support.deploy_check.kustomize import apply_operation, split_image


def test_json_patch_operations_follow_rfc_6902() -> None:
    document: dict[str, Any] = {"spec": {"list": [1, 2], "a/b": {"~x": 1}}}
    assert apply_operation(document, {"op": "add", "path": "/spec/list/-", "value": 3}) is None
    assert apply_operation(document, {"op": "add", "path": "/spec/list/0", "value": 0}) is None
    assert apply_operation(document, {"op": "remove", "path": "/spec/list/1"}) is None
    assert apply_operation(document, {"op": "replace", "path": "/spec/a~1b/~0x", "value": 2}) is None
    assert document == {"spec": {"list": [0, 2, 3], "a/b": {"~x": 2}}}
    assert apply_operation(document, {"op": "test", "path": "/spec/list/0", "value": 0}) is None
    assert apply_operation(document, {"op": "test", "path": "/spec/list/0", "value": 9}) is not None
    assert apply_operation(document, {"op": "replace", "path": "/spec/missing", "value": 1}) is not None
    assert apply_operation(document, {"op": "remove", "path": "/spec/list/7"}) is not None
    assert apply_operation(document, {"op": "move", "path": "/spec/list/0"}) is not None
    assert apply_operation(document, {"op": "add", "path": "no-slash", "value": 1}) is not None


@pytest.mark.parametrize(("image", "parts"), [
    ("theodolite-planner", ("theodolite-planner", None, None)),
    ("theodolite-planner:dev", ("theodolite-planner", "dev", None)),
    ("localhost:5000/theodolite/planner:1.2", ("localhost:5000/theodolite/planner", "1.2", None)),
    ("localhost:5000/planner@sha256:ab", ("localhost:5000/planner", None, "sha256:ab")),
])
def test_image_references_split_into_name_tag_and_digest(image: str, parts: tuple[str, str | None, str | None]) -> None:
    assert split_image(image) == parts


@pytest.mark.parametrize(("expr", "series", "errors"), [
    ("sum by (device) (rate(theodolite_steps_started_total[5m]))", {"theodolite_steps_started_total"}, []),
    ("sum(rate(x[5m])) by (le) > 0 unless on (device) group_left(task) y", {"x", "y"}, []),
    ('up{job=~"a{1}"} == 0', {"up"}, []),
    ("histogram_quantile(0.95, b_bucket) offset 1h", {"b_bucket"}, []),
    ("max(x", set(), ["unclosed ')' expected"]),
    ("rat(x[5m])", {"x"}, ["unknown function rat()"]),
])
def test_promql_scanning_finds_series_and_problems(expr: str, series: set[str], errors: list[str]) -> None:
    scan = promql.scan(expr)
    assert (scan.series, scan.errors) == (series, errors)


def test_promql_matchers_of_a_series() -> None:
    query = 'max(theodolite_ready_steps{device="gpu", namespace!="x"}) or max(other_ready_steps{device="cpu"})'
    assert promql.matchers(query, "theodolite_ready_steps") == [{"device": ("=", "gpu"), "namespace": ("!=", "x")}]


def test_dockerfile_stages_inherit_from_their_base_stage() -> None:
    stages = parse("ARG V=1\nFROM python:3 AS base\nUSER app\nHEALTHCHECK CMD \\\n  true\n"
                   "FROM base AS child\nRUN x\nFROM scratch\nUSER root\n")
    assert list(stages) == ["base", "child", "2"]
    assert effective(stages, "child", "USER") == "app"
    assert effective(stages, "child", "HEALTHCHECK") == "CMD    true"
    assert effective(stages, "2", "USER") == "root"


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90.0), ("1m30s", 90.0), ("1h", 3600.0), ("500ms", 0.5),
                                               ("", None), ("90", None), ("1 m", None)])
def test_compose_durations(text: str, seconds: float | None) -> None:
    assert duration_s(text) == seconds
