"""Benchmark tasks, registered with theodolite and (when installed) Dioptra's pyplugs so the
same chain document runs on both engines."""

from __future__ import annotations

from typing import Any

from plugins import task

try:
    from dioptra.pyplugs import register
except ImportError:
    def register(func):  # type: ignore[no-redef]
        return func


@task(outputs="value")
@register
def bench_inc(x: int) -> int:
    return x + 1


@task
@register
def bench_noop(*_: Any) -> None:
    return None
