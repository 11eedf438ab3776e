"""Validation problems as values: a stable code, a path in the document, words to act on."""

from __future__ import annotations

import datetime
import math
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict

from shared.document.source import DocPath


class Severity(str, Enum):
    ERROR = "error"
    WARNING = "warning"


class Issue(BaseModel):
    """One problem found in a document.

    ``path`` is the location inside the document (``("graph", "train", "model")``): string
    keys, list indexes, and the odd keys YAML allows (``1.5``, ``null``, a date) as they are;
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
            if isinstance(part, str):
                text += ("." if text else "") + part
            else:
                text += f"[{format_key(part)}]"
        return text

    def format(self, file_name: str) -> str:
        """``FILE:LINE: path.in.document: message`` (warnings say so after the path)."""
        prefix = "warning: " if self.severity is Severity.WARNING else ""
        return f"{file_name}:{self.line or 1}: {self.dotted_path}: {prefix}{self.message}"


def format_key(key: Any) -> str:
    """A list index or a non-string key as YAML would write it: ``0``, ``1.5``, ``null``, ``true``."""
    if key is None:
        return "null"
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, float):
        if math.isnan(key):
            return ".nan"
        if math.isinf(key):
            return ".inf" if key > 0 else "-.inf"
        return repr(key)
    if isinstance(key, datetime.datetime):
        return key.isoformat(sep=" ")
    if isinstance(key, (int, datetime.date)):
        return str(key)
    return repr(key)


def has_errors(issues: list[Issue]) -> bool:
    return any(issue.severity is Severity.ERROR for issue in issues)


def error(code: str, path: DocPath, message: str, *, key: bool = False) -> Issue:
    return Issue(code=code, path=path, message=message, key_line=key)


def warning(code: str, path: DocPath, message: str, *, key: bool = False) -> Issue:
    return Issue(code=code, path=path, message=message, severity=Severity.WARNING, key_line=key)
