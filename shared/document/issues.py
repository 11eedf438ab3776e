"""Validation problems as values: a stable code, a path in the document, words to act on."""

from __future__ import annotations

from enum import Enum

from pydantic import BaseModel, ConfigDict

from shared.document.source import DocPath


class Severity(str, Enum):
    ERROR = "error"
    WARNING = "warning"


class Issue(BaseModel):
    """One problem found in a document.

    ``path`` is the location inside the document (``("graph", "train", "model")``);
    ``line`` is filled in from the YAML source when the document came from text.
    """

    model_config = ConfigDict(frozen=True)

    code: str
    message: str
    path: DocPath = ()
    severity: Severity = Severity.ERROR
    line: int | None = None
    key_line: bool = False
    """Locate by the line of the last path element's key rather than its value."""

    @property
    def dotted_path(self) -> str:
        if not self.path:
            return "(document)"
        text = ""
        for part in self.path:
            if isinstance(part, int):
                text += f"[{part}]"
            else:
                text += ("." if text else "") + str(part)
        return text

    def format(self, file_name: str) -> str:
        """``FILE:LINE: path.in.document: message`` (warnings say so after the path)."""
        prefix = "warning: " if self.severity is Severity.WARNING else ""
        return f"{file_name}:{self.line or 1}: {self.dotted_path}: {prefix}{self.message}"


def has_errors(issues: list[Issue]) -> bool:
    return any(issue.severity is Severity.ERROR for issue in issues)


def error(code: str, path: DocPath, message: str, *, key: bool = False) -> Issue:
    return Issue(code=code, path=path, message=message, key_line=key)


def warning(code: str, path: DocPath, message: str, *, key: bool = False) -> Issue:
    return Issue(code=code, path=path, message=message, severity=Severity.WARNING, key_line=key)
