"""The one shape of every owner of async resources (connections, clients)."""

from __future__ import annotations

from typing import Self


class AsyncResource:
    """An async context manager over ``open()`` and an idempotent ``close()``.

    Subclasses open what they own in ``open`` and release it, in reverse order, in ``close``;
    ``async with`` closes even when the body fails.
    """

    async def open(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()
