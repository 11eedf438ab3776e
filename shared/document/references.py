"""``$name`` / ``$step.output`` references: finding them and resolving them to values."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from shared.document.source import DocPath
from shared.document.types import is_reference
from shared.errors import ReferenceResolutionError

__all__ = ["is_reference", "iter_references", "resolve", "split_reference"]


def split_reference(reference: str) -> tuple[str, str | None]:
    """``"step.out"`` -> ``("step", "out")``; ``"name"`` -> ``("name", None)``."""
    name, dot, output = reference.partition(".")
    return (name, output) if dot else (name, None)


def iter_references(value: Any, path: DocPath) -> Iterator[tuple[str, DocPath]]:
    """Every reference (without its ``$``) inside a value, with the path where it stands."""
    if isinstance(value, str):
        if is_reference(value):
            yield value[1:], path
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from iter_references(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from iter_references(item, (*path, index))


def resolve(
    value: Any, parameters: Mapping[str, Any], outputs: Mapping[str, Mapping[str, Any]]
) -> Any:
    """Replace references in ``value`` the way Dioptra's task engine does.

    ``outputs`` maps step (and artifact input) names to their named outputs. A bare
    ``$name`` is a parameter if one exists, else the single output of a step; ``$$x`` is the
    literal ``$x``.
    """
    if isinstance(value, str):
        if is_reference(value):
            return _lookup(value[1:], parameters, outputs)
        if value.startswith("$$"):
            return value[1:]
        return value
    if isinstance(value, dict):
        return {key: resolve(item, parameters, outputs) for key, item in value.items()}
    if isinstance(value, list):
        return [resolve(item, parameters, outputs) for item in value]
    return value


def _lookup(
    reference: str, parameters: Mapping[str, Any], outputs: Mapping[str, Mapping[str, Any]]
) -> Any:
    name, output = split_reference(reference)
    if output is not None:
        named = outputs.get(name)
        if named is None:
            raise ReferenceResolutionError(reference, f"no step or artifact {name!r} has produced outputs")
        if output not in named:
            raise ReferenceResolutionError(reference, f"{name!r} has no output {output!r}")
        return named[output]
    if name in parameters:
        return parameters[name]
    named = outputs.get(name)
    if named is None:
        raise ReferenceResolutionError(reference, f"nothing named {name!r} is available")
    if len(named) != 1:
        raise ReferenceResolutionError(
            reference, f"{name!r} has {len(named)} outputs; name one as ${name}.OUTPUT"
        )
    return next(iter(named.values()))
