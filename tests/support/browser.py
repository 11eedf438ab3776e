"""Debian's chromium driven by Playwright, for the dashboard's browser tests.

Playwright's own browser download needs the internet, so the tests launch the system's
``chromium`` (installed by ``scripts/ensure-chromium.sh``, which ``make test`` runs) with the
flags that keep it off the network and out of first-run chores.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.sync_api import Browser

CHROMIUM_FLAGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--no-first-run", "--disable-gpu", "--disable-dev-shm-usage"]


def chromium_path() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        raise RuntimeError("Debian's chromium is not installed: run `bash scripts/ensure-chromium.sh` (make test does)")
    return found


@contextmanager
def chromium() -> Iterator[Browser]:
    """A headless chromium for the duration of the block (closed, and its processes gone, after)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()
