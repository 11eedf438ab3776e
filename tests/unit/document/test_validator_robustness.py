"""The validator never crashes and never stalls: each input that once did is a case here.

Every input gives a valid document or located problems, within limits on size, nesting and
alias expansion that are reported as problems of their own.
"""

from __future__ import annotations

import datetime
import gc
import threading
import time
from pathlib import Path

import pytest
import yaml

import shared.document as document_module
from shared.document import check_file, check_text
from shared.document.compose import MAX_ALIAS_NODES, MAX_DEPTH, MAX_DOCUMENT_BYTES
from shared.document.issues import Issue
from shared.document.source import DocumentSyntaxError, parse_text
from shared.document.validation import ValidationResult
from tests.unit.conftest import check, codes

ECHO = "tasks:\n  echo: {plugin: tp_tasks.tp_echo, inputs: [{value: any}], outputs: {value: any}}\n"


def bomb(levels: int = 9, width: int = 9) -> str:
    """A billion-laughs document: ``width ** levels`` values behind a few hundred bytes."""
    lines = ["parameters:", "  l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for level in range(1, levels):
        lines.append(f"  l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * width) + "]")
    return ECHO + "\n".join(lines) + f"\ngraph:\n  s: {{echo: [*l{levels - 1}]}}\n"


def nested(depth: int, style: str) -> str:
    if style == "flow-seq":
        return ECHO + "graph:\n  s: {echo: [" + "[" * depth + "]" * depth + "]}\n"
    if style == "flow-map":
        return ECHO + "graph:\n  s: {echo: [" + "{a: " * depth + "1" + "}" * depth + "]}\n"
    if style == "block-seq":
        return ECHO + "graph:\n  s:\n    echo:\n    - " + "- " * depth + "x\n"
    lines = [ECHO + "graph:\n  s:\n    echo:\n      value:"]
    lines += ["  " * (level + 4) + "a:" for level in range(depth)]
    return "\n".join(lines) + " 1\n"


def only(result: ValidationResult) -> Issue:
    assert result.document is None and len(result.issues) == 1, [i.format("doc.yaml") for i in result.issues]
    return result.issues[0]


# the inputs of issue 7 -----------------------------------------------------------------------
@pytest.mark.parametrize("key, shown", [
    ("1.5", "graph[1.5]"), ("null", "graph[null]"), ("~", "graph[null]"), ("2001-01-01", "graph[2001-01-01]"),
    ("true", "graph[true]"), ("7", "graph[7]"), ("2001-12-14 21:59:43.10", "graph[2001-12-14 21:59:43.100000]"),
    ("!!binary aGk=", "graph[b'hi']"), (".inf", "graph[.inf]"),
])
def test_a_non_string_step_name_is_a_located_name_problem(key: str, shown: str) -> None:
    result = check(ECHO + f"graph:\n  ok: {{echo: [1]}}\n  {key}: {{echo: [1]}}\n")
    issue = only(result)
    assert issue.code == "name.not-string"
    assert issue.line == 5
    assert issue.format("doc.yaml").startswith(f"doc.yaml:5: {shown}: step names must be strings")


def test_non_string_keys_anywhere_are_located() -> None:
    result = check(ECHO + "parameters:\n  2001-01-01: 1\ngraph:\n  s:\n    task: echo\n    kwargs:\n      1.5: 2\n      null: 3\n")
    assert [issue.format("doc.yaml") for issue in result.issues] == [
        "doc.yaml:4: parameters[2001-01-01]: parameter names must be strings, got the date 2001-01-01; quote it to make it one",
        "doc.yaml:9: graph.s.kwargs[1.5]: keyword argument names must be strings, got the number 1.5",
        "doc.yaml:10: graph.s.kwargs[null]: keyword argument names must be strings, got null",
    ]
    assert result.issues[0].path == ("parameters", datetime.date(2001, 1, 1))


@pytest.mark.parametrize("text, code, path", [
    ("graph:\n  s: {tp_echo: [1]}\nartifact_outputs:\n  out: {contents: $s, task: {name: tp_echo, args: {1.5: 2}}}\n",
     "artifact_outputs.task", ("artifact_outputs", "out", "task", "args", 1.5)),
    ("types: {u: {union: [{mapping: {1.5: integer, a: string}}, {mapping: {1.5: integer, a: string}}]}}\ngraph:\n  s: {tp_echo: [1]}\n",
     "types.shape", ("types", "u", "union", 0, "mapping", 1.5)),
])
def test_non_string_keys_where_models_and_sorting_once_failed(text: str, code: str, path: tuple) -> None:
    issue = only(check(text))
    assert (issue.code, issue.path) == (code, path)
    assert "must be strings, got the number 1.5" in issue.message


def test_an_odd_top_level_key_is_an_unknown_key_at_its_line() -> None:
    issue = check("graph:\n  s: {tp_echo: [1]}\n1.5: x\n").issues[0]
    assert (issue.code, issue.line, issue.dotted_path) == ("document.unknown-key", 3, "[1.5]")


@pytest.mark.parametrize("style", ["flow-seq", "flow-map", "block-seq", "block-map"])
@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_deep_nesting_is_refused_at_its_line(style: str, depth: int) -> None:
    if style == "block-map" and depth > 1_000:
        depth = 3_000  # indentation grows the text quadratically
    started = time.perf_counter()
    issue = only(check(nested(depth, style)))
    assert time.perf_counter() - started < 2
    assert issue.code == "document.too-deep"
    assert issue.line == (4 if style.startswith("flow") else 6 if style == "block-seq" else MAX_DEPTH + 3)


@pytest.mark.parametrize("style", ["flow-seq", "flow-map", "block-seq", "block-map"])
def test_nesting_up_to_the_limit_is_accepted(style: str) -> None:
    allowed = {"flow-seq": MAX_DEPTH - 4, "flow-map": MAX_DEPTH - 4, "block-seq": MAX_DEPTH - 4, "block-map": MAX_DEPTH - 4}[style]
    assert check(nested(allowed, style)).ok
    assert only(check(nested(allowed + 1, style))).code == "document.too-deep"


@pytest.mark.parametrize("text", [
    ECHO + "graph:\n  s: &s {echo: {value: *s}}\n",
    ECHO + "graph:\n  s: {echo: &l [1, [2, *l]]}\n",
    "&r [*r]\n",
])
def test_a_recursive_alias_is_refused(text: str) -> None:
    issue = only(check(text))
    assert issue.code == "document.recursive-alias"
    assert issue.line == text.count("\n", 0, text.index("*")) + 1


@pytest.mark.parametrize("text, line, words", [
    ("graph: !!timestamp 2001-01-01{\n", 1, "cannot read '2001-01-01{' as a timestamp"),
    ("{!!float }", 1, "cannot read '' as a number"),
    ("graph:\n  s: {echo: [!!int ]}\n", 2, "cannot read '' as an integer"),
    ("graph:\n  s: {echo: [!!bool maybe]}\n", 2, "cannot read 'maybe' as a boolean"),
    ("graph:\n\n  s: {echo: [!!timestamp 2001-02-30]}\n", 3, "cannot read '2001-02-30' as a timestamp: day is out of range"),
    ("graph:\n  s: {echo: [!!timestamp '2001-01-01 00:00:00 +99:00']}\n", 2, "as a timestamp"),
    ("graph:\n  s: {echo: [!!binary 'é']}\n", 2, "base64"),
    ("graph:\n  s: {echo: [!!float ._]}\n", 2, "cannot read '._' as a number: could not convert"),
])
def test_a_value_pyyaml_cannot_build_is_a_located_syntax_problem(text: str, line: int, words: str) -> None:
    issue = only(check(text))
    assert (issue.code, issue.line) == ("document.syntax", line)
    assert words in issue.message


def test_an_alias_bomb_is_refused_in_milliseconds() -> None:
    text = bomb()
    assert len(text) < 700
    started = time.perf_counter()
    issue = only(check(text))
    assert time.perf_counter() - started < 0.5
    assert issue.code == "document.alias-expansion"
    assert issue.line == 10  # the first alias of level 6 brings the total past the limit


def test_a_merge_key_chain_counts_as_alias_expansion() -> None:
    lines = ["parameters:", "  m0: &m0 {a: 1, b: 2}"]
    lines += [f"  m{i}: &m{i} {{<<: *m{i - 1}, k{i}: {i}}}" for i in range(1, 3000)]
    issue = only(check(ECHO + "\n".join(lines) + "\ngraph:\n  s: {echo: [1]}\n"))
    assert issue.code in ("document.too-deep", "document.alias-expansion")


def test_an_alias_counts_the_nesting_it_stands_for() -> None:
    deep = "[" * 60 + "]" * 60
    text = ECHO + f"parameters:\n  p: &p {deep}\ngraph:\n  s: {{echo: [{'[' * 45}*p{']' * 45}]}}\n"
    issue = only(check(text))
    assert (issue.code, issue.line) == ("document.too-deep", 6)


def test_aliases_within_the_limits_validate_and_share_one_value() -> None:
    text = ECHO + "graph:\n  a: {echo: [&c {lr: 0.1, layers: [1, 2]}]}\n  b: {echo: {value: *c}}\n"
    result = check(text)
    assert result.ok, result.issues
    assert result.document.steps["a"].args[0] is result.document.steps["b"].kwargs["value"]
    assert result.document.steps["a"].args[0] == {"lr": 0.1, "layers": [1, 2]}


def test_aliases_up_to_the_expansion_limit_are_accepted() -> None:
    width = 999  # each use of the alias stands for the list and its items: 1,000 nodes
    uses = MAX_ALIAS_NODES // (width + 1)

    def text(count: int) -> str:
        return "big: &b [" + ", ".join(["1"] * width) + "]\nuses: [" + ", ".join(["*b"] * count) + "]\n"

    assert len(parse_text(text(uses)).data["uses"]) == uses
    with pytest.raises(DocumentSyntaxError) as refused:
        parse_text(text(uses + 1))
    assert refused.value.code == "document.alias-expansion"


def test_a_document_over_the_size_limit_is_refused_without_parsing() -> None:
    issue = only(check_text("#" * MAX_DOCUMENT_BYTES + "\n", "big.yaml", None))
    assert (issue.code, issue.line) == ("document.too-large", 1)
    assert only(check_text("é" * (MAX_DOCUMENT_BYTES // 2 + 1), "big.yaml", None)).code == "document.too-large"
    assert check_text("#" * (MAX_DOCUMENT_BYTES - 20) + "\ngraph: {}\n", "big.yaml", None).issues[0].code == "graph.empty"


def test_a_file_over_the_size_limit_or_endless_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * (MAX_DOCUMENT_BYTES + 1))
    assert only(check_file(big, None)).code == "document.too-large"
    if Path("/dev/zero").exists():
        assert only(check_file("/dev/zero", None)).code == "document.too-large"


def test_text_that_is_not_unicode_is_a_syntax_problem() -> None:
    assert only(check_text("graph: \ud800\n", "doc.yaml", None)).code == "document.syntax"


def test_an_internal_failure_is_a_located_problem_not_a_traceback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def explode(*_: object) -> None:
        raise KeyError("boom")

    monkeypatch.setattr(document_module, "validate_source", explode)
    issue = only(check("graph:\n  s: {tp_echo: [1]}\n"))
    assert (issue.code, issue.line) == ("document.internal", 1)
    assert "KeyError: 'boom'" in issue.message
    path = tmp_path / "doc.yaml"
    path.write_text("graph: {}\n")
    assert only(check_file(path, None)).code == "document.internal"


def test_duplicate_anchors_and_undefined_aliases_stay_syntax_problems() -> None:
    assert only(check("graph:\n  a: &x {tp_echo: [1]}\n  b: &x {tp_echo: [2]}\n")).code == "document.syntax"
    issue = only(check("graph:\n  a: {tp_echo: [*nowhere]}\n"))
    assert (issue.code, issue.line) == ("document.syntax", 2)
    assert codes(check("graph:\n  a: {tp_echo: [1]}\n---\ngraph: {}\n")) == ["document.syntax"]


# the garbage collector ------------------------------------------------------------------------
def _observe_gc(monkeypatch: pytest.MonkeyPatch) -> tuple[list[bool], threading.Event, threading.Event]:
    """Make validation stop half-way until released, recording the collector's state there."""
    seen: list[bool] = []
    inside, release = threading.Event(), threading.Event()
    real = document_module.validate_source

    def validate(*args: object) -> ValidationResult:
        seen.append(gc.isenabled())
        inside.set()
        release.wait(10)
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(document_module, "validate_source", validate)
    return seen, inside, release


def test_validating_in_a_worker_thread_leaves_the_collector_on(monkeypatch: pytest.MonkeyPatch) -> None:
    seen, inside, release = _observe_gc(monkeypatch)
    threshold = gc.get_threshold()
    results: list[ValidationResult] = []
    worker = threading.Thread(target=lambda: results.append(check("graph:\n  s: {tp_echo: [1]}\n")))
    worker.start()
    assert inside.wait(10)
    observed_from_main = gc.isenabled()
    release.set()
    worker.join(10)
    assert results and results[0].ok
    assert seen == [True] and observed_from_main
    assert gc.get_threshold() == threshold


def test_overlapping_threaded_validations_restore_the_thresholds(monkeypatch: pytest.MonkeyPatch) -> None:
    seen, inside, release = _observe_gc(monkeypatch)
    threshold = gc.get_threshold()
    workers = [threading.Thread(target=check, args=("graph:\n  s: {tp_echo: [1]}\n",)) for _ in range(3)]
    for worker in workers:
        worker.start()
    assert inside.wait(10)
    time.sleep(0.05)
    release.set()
    for worker in workers:
        worker.join(10)
    assert seen == [True] * 3
    assert gc.get_threshold() == threshold and gc.isenabled()


def test_validating_alone_in_the_main_thread_restores_the_collector() -> None:
    assert gc.isenabled()
    check(bomb())
    assert gc.isenabled()
    gc.disable()
    try:
        check("graph: {}\n")
        assert not gc.isenabled()  # a caller's own choice is kept
    finally:
        gc.enable()


def test_safe_dump_of_odd_keys_round_trips_to_problems() -> None:
    text = yaml.safe_dump({"graph": {1.5: {"tp_echo": [1]}, None: 1, datetime.date(2001, 1, 1): 2, True: 3}})
    assert set(codes(check(text))) == {"name.not-string"}
