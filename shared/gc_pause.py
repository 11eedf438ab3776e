"""Pausing the cyclic garbage collector around allocation-heavy, cycle-free work.

Parsing and validating a large document allocates hundreds of thousands of small
containers and no reference cycles; with the collector running, repeated full-heap
passes make that work superlinear. Reference counting still frees everything meanwhile.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
