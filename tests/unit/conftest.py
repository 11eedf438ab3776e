"""Unit-test helpers: check and run documents in-process against the fixture plugins."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shared.document import check_text
from shared.document.parameters import bind_parameters
from shared.document.types import TypeRegistry
from shared.document.validation import ValidationResult
from shared.execution.local import LocalExecutor
from shared.execution.result import JobResult
from shared.plugin_catalog import PluginCatalog
from shared.plugin_registry import PluginRegistry

FIXTURE_PLUGINS = Path(__file__).parent / "fixtures" / "plugins"
BROKEN_PLUGINS = Path(__file__).parent / "fixtures" / "broken_plugins"


def fixture_catalog(*dirs: Path) -> PluginCatalog:
    return PluginCatalog(search_dirs=list(dirs or [FIXTURE_PLUGINS]))


def check(text: str, *dirs: Path) -> ValidationResult:
    return check_text(text, "doc.yaml", fixture_catalog(*dirs))


def codes(result: ValidationResult) -> list[str]:
    return [issue.code for issue in result.issues]


def run_document(text: str, params: dict[str, Any] | None = None, *, concurrency: int = 4,
                 fail_fast: bool = True, dirs: tuple[Path, ...] = ()) -> JobResult:
    result = check(text, *dirs)
    assert result.document is not None, [i.format("doc.yaml") for i in result.issues]
    values, issues = bind_parameters(result.document, params or {}, TypeRegistry(result.document.types))
    assert not [i for i in issues if i.severity.value == "error"], issues
    with PluginRegistry(list(dirs or [FIXTURE_PLUGINS])) as registry:
        return LocalExecutor(result.document, values, registry, concurrency=concurrency, fail_fast=fail_fast).run()


def outputs(result: JobResult, step: str) -> dict[str, Any]:
    return result.steps[step].outputs


@pytest.fixture
def fixture_plugins() -> Path:
    return FIXTURE_PLUGINS
