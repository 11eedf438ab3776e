"""Job labels: ``KEY=VALUE`` pairs a submitter attaches to a job to find it again.

``theodolite submit --label team=vision`` stores them on the job document (``labels``);
``theodolite jobs --label team=vision`` (or ``--label team``: has the key) filters by them.
Kubernetes-like limits keep them small and safe to query: at most :data:`MAX_LABELS` labels; a
key is 1-63 letters, digits, ``-`` or ``_``, starting and ending with a letter or digit (no
``.``, which MongoDB reads as a path, and no ``$``); a value is at most 256 characters, none of
them a control character (a label is shown on one table line).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Annotated

from pydantic import Field, StringConstraints

MAX_LABELS = 32
MAX_KEY_CHARS = 63
MAX_VALUE_CHARS = 256
KEY_PATTERN = r"^[A-Za-z0-9]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?$"
VALUE_PATTERN = r"^[^\x00-\x1f\x7f]*$"

LabelKey = Annotated[str, StringConstraints(pattern=KEY_PATTERN, min_length=1, max_length=MAX_KEY_CHARS)]
LabelValue = Annotated[str, StringConstraints(pattern=VALUE_PATTERN, max_length=MAX_VALUE_CHARS)]
Labels = Annotated[dict[LabelKey, LabelValue], Field(
    max_length=MAX_LABELS,
    description=(f"Labels to find the job by (theodolite jobs --label): at most {MAX_LABELS}; keys of 1-{MAX_KEY_CHARS} "
                 f"letters, digits, '-' or '_' (starting and ending with a letter or digit); values of at most "
                 f"{MAX_VALUE_CHARS} characters without control characters."))]

_KEY = re.compile(KEY_PATTERN)
_VALUE = re.compile(VALUE_PATTERN)


def key_problem(key: str) -> str | None:
    """Why ``key`` is not a label key, or None."""
    if len(key) > MAX_KEY_CHARS:
        return f"label key {key[:20]!r}... is longer than {MAX_KEY_CHARS} characters"
    if not _KEY.match(key):
        return (f"label key {key!r} is not 1-{MAX_KEY_CHARS} letters, digits, '-' or '_' "
                "starting and ending with a letter or digit")
    return None


def value_problem(key: str, value: str) -> str | None:
    """Why ``value`` is not a value of label ``key``, or None."""
    if len(value) > MAX_VALUE_CHARS:
        return f"the value of label {key!r} is longer than {MAX_VALUE_CHARS} characters"
    if not _VALUE.match(value):
        return f"the value of label {key!r} holds a control character"
    return None


def parse_label(text: str, *, bare_key: bool = False) -> tuple[str, str | None]:
    """``KEY=VALUE`` as ``(key, value)``; with ``bare_key``, ``KEY`` alone is ``(key, None)``.

    Raises ValueError with one line saying what is wrong."""
    key, sep, value = text.partition("=")
    if not sep and not bare_key:
        raise ValueError(f"expected KEY=VALUE, got {text!r}")
    problem = key_problem(key) or (value_problem(key, value) if sep else None)
    if problem is not None:
        raise ValueError(problem)
    return key, (value if sep else None)


def parse_labels(texts: Iterable[str]) -> dict[str, str]:
    """Every ``KEY=VALUE`` of a submission; a key given twice or too many labels is a ValueError."""
    labels: dict[str, str] = {}
    for text in texts:
        key, value = parse_label(text)
        if key in labels:
            raise ValueError(f"label {key!r} is given twice")
        labels[key] = value or ""
    if len(labels) > MAX_LABELS:
        raise ValueError(f"{len(labels)} labels: at most {MAX_LABELS} are allowed")
    return labels
