"""Running one step: resolve its arguments, call the task, name its outputs.

Shared by the embedded runner and the distributed workers so both give the same results
as Dioptra's task engine: a single output holds the whole return value; a list of outputs
unpacks an iterable (a count mismatch is logged, a non-iterable is an error).

A task's failure is any ``BaseException`` it raises, ``SystemExit`` and ``KeyboardInterrupt``
included (in a runner thread they come from the task's own code, never from Ctrl-C); see
:func:`retryable` for which failures ``@task(retries=N)`` re-runs.
"""

from __future__ import annotations

import inspect
import logging
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from shared.document.model import Step
from shared.document.references import iter_references, resolve, split_reference
from shared.errors import StepOutputError
from shared.plugin_api import OutputSpec

log = logging.getLogger("theodolite.steps")


def resolve_arguments(
    step: Step, parameters: Mapping[str, Any], outputs: Mapping[str, Mapping[str, Any]]
) -> tuple[list[Any], dict[str, Any]]:
    args = [resolve(value, parameters, outputs) for value in step.args]
    kwargs = {key: resolve(value, parameters, outputs) for key, value in step.kwargs.items()}
    return args, kwargs


def referenced_steps(step: Step, candidates: Sequence[str]) -> list[str]:
    """The upstream steps whose outputs ``step``'s arguments use (not order-only dependencies)."""
    wanted = set(candidates)
    found: dict[str, None] = {}
    for value in (*step.args, *step.kwargs.values()):
        for reference, _ in iter_references(value, ()):
            name = split_reference(reference)[0]
            if name in wanted:
                found[name] = None
    return list(found)


def name_outputs(step_name: str, spec: OutputSpec, value: Any) -> dict[str, Any]:
    if not spec.names:
        return {}
    if not spec.unpack:
        return {spec.names[0]: value}
    try:
        iterator = iter(value)
    except TypeError:
        raise StepOutputError(
            step_name,
            f"the task returned a non-iterable {type(value).__name__} but declares "
            f"{len(spec.names)} outputs ({', '.join(spec.names)})",
        ) from None
    try:
        count = len(value)
    except TypeError:
        count = None
    if count is not None and count != len(spec.names):
        log.warning(
            "step %r: the task returned %d values for %d declared outputs", step_name, count, len(spec.names)
        )
    return dict(zip(spec.names, iterator))


def invoke(
    step: Step,
    function: Callable[..., Any],
    spec: OutputSpec,
    parameters: Mapping[str, Any],
    outputs: Mapping[str, Mapping[str, Any]],
) -> dict[str, Any]:
    args, kwargs = resolve_arguments(step, parameters, outputs)
    return name_outputs(step.name, spec, function(*args, **kwargs))


def retryable(error: BaseException) -> bool:
    """Whether ``@task(retries=N)`` re-runs a step that failed with ``error``.

    Only ``Exception`` subclasses are retried (timeouts included). A ``BaseException`` that is
    not an ``Exception`` (``SystemExit``, ``KeyboardInterrupt``, ``GeneratorExit``, a custom
    subclass) is code deliberately stopping, not a transient error: it fails the step at
    once, on its first attempt.
    """
    return isinstance(error, Exception)


def error_message(error: BaseException) -> str:
    """``str(error)``; a placeholder when the exception cannot even be printed."""
    try:
        return str(error)
    except BaseException:  # noqa: BLE001 - a broken __str__ must not lose the failure
        return f"<unprintable {type(error).__name__}>"


def format_traceback(error: BaseException) -> str:
    """The full traceback text of ``error`` (its type and message alone if that fails)."""
    try:
        return "".join(traceback.format_exception(error))
    except BaseException:  # noqa: BLE001 - as error_message
        return f"{type(error).__name__}: {error_message(error)}\n"


def with_context(function: Callable[..., Any], context_arg: str | None, args: list[Any], kwargs: dict[str, Any],
                 context: Any) -> tuple[list[Any], dict[str, Any]]:
    """The call's arguments with the task context put where the function declares it: in its
    position when the call's positional arguments reach that far, else by keyword."""
    if context_arg is None:
        return args, kwargs
    try:
        names = [p.name for p in inspect.signature(function).parameters.values()
                 if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        names = []
    if context_arg in names and names.index(context_arg) <= len(args):
        index = names.index(context_arg)
        return [*args[:index], context, *args[index:]], kwargs
    return args, {**kwargs, context_arg: context}
