"""General-purpose tasks for examples, tests and benchmarks."""

from __future__ import annotations

import time
from typing import Any

from plugins import task


@task(outputs="sum")
def add(a: float, b: float) -> float:
    return a + b


@task(outputs="product")
def multiply(a: float, b: float) -> float:
    return a * b


@task(outputs="value")
def square(x: float) -> float:
    return x * x


@task(outputs="total")
def sum_values(values: list) -> Any:
    return sum(values)


@task(outputs="value")
def echo(value: Any) -> Any:
    return value


@task(outputs=["quotient", "remainder"])
def divmod_values(a: int, b: int) -> tuple[int, int]:
    return divmod(a, b)


@task
def noop(*_: Any, **__: Any) -> None:
    """Does nothing; for ordering with ``dependencies`` and for measuring overhead."""


@task(outputs="slept_s")
def sleep_for(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@task
def fail_with(message: str = "failed on purpose") -> None:
    raise RuntimeError(message)
