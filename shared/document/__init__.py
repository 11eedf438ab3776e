"""The job document: reading, validating and binding parameters."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from shared.document.issues import Issue, Severity, error
from shared.document.model import JobDocument
from shared.document.source import DocumentSyntaxError, SourceDocument, load_file, parse_text
from shared.document.validation import ValidationResult, validate_source
from shared.gc_pause import gc_paused
from shared.plugin_catalog import PluginCatalog, plugin_dirs_from_env

__all__ = [
    "Issue", "JobDocument", "Severity", "ValidationResult", "catalog_for", "check_file", "check_text",
]


def catalog_for(document_path: str | Path | None, plugin_dirs: Sequence[str | Path] = ()) -> PluginCatalog:
    """The catalog a document is checked against: --plugins, THEODOLITE_PLUGINS, its folder, cwd."""
    extra = [Path.cwd()]
    if document_path is not None:
        extra.insert(0, Path(document_path).resolve().parent)
    return PluginCatalog(
        search_dirs=[Path(d) for d in plugin_dirs] + plugin_dirs_from_env(),
        extra_dirs=extra,
    )


def check_text(text: str, name: str, catalog: PluginCatalog | None) -> ValidationResult:
    """Every problem of a document given as text; never raises (an internal failure is a problem too)."""
    with gc_paused():
        try:
            return _check_text(text, name, catalog)
        except Exception as failure:  # noqa: BLE001 - belt and braces: a crash is reported, not raised
            return _internal(failure)


def _check_text(text: str, name: str, catalog: PluginCatalog | None) -> ValidationResult:
    try:
        source = parse_text(text, name)
    except DocumentSyntaxError as problem:
        return _unreadable(problem)
    return validate_source(source, catalog)


def check_file(path: str | Path, catalog: PluginCatalog | None) -> ValidationResult:
    """Every problem of a document file; never raises (an internal failure is a problem too)."""
    with gc_paused():
        try:
            return _check_file(path, catalog)
        except Exception as failure:  # noqa: BLE001 - belt and braces: a crash is reported, not raised
            return _internal(failure)


def _check_file(path: str | Path, catalog: PluginCatalog | None) -> ValidationResult:
    try:
        source: SourceDocument = load_file(path)
    except DocumentSyntaxError as problem:
        return _unreadable(problem)
    return validate_source(source, catalog)


def _unreadable(problem: DocumentSyntaxError) -> ValidationResult:
    return ValidationResult([error(problem.code, (), problem.message).model_copy(update={"line": problem.line})])


def _internal(failure: Exception) -> ValidationResult:
    words = " ".join(str(failure).split())[:500]
    message = f"the validator failed on this document ({type(failure).__name__}: {words}); this is a bug in theodolite, please report it"
    return ValidationResult([error("document.internal", (), message).model_copy(update={"line": 1})])
