"""Reading a service's /metrics, /healthz and /readyz in tests (plain urllib: no event loop needed)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]
"""Sample name -> sorted label pairs -> value."""


def get(url: str, timeout_s: float = 5.0) -> tuple[int, str]:
    """(status, body) of a GET; an HTTP error status is returned, not raised."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as error:
        return int(error.code), error.read().decode()
    except (urllib.error.URLError, ConnectionError) as error:  # not listening (yet): status 0
        return 0, str(error)


def scrape(base_url: str) -> Samples:
    status, body = get(f"{base_url}/metrics")
    if status != 200:
        raise AssertionError(f"{base_url}/metrics answered {status}: {body[:500]}")
    found: Samples = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels`` (0 when none)."""
    wanted = set(labels.items())
    return sum(v for key, v in samples.get(name, {}).items() if wanted <= set(key))


def readyz(base_url: str) -> tuple[int, dict[str, Any]]:
    status, body = get(f"{base_url}/readyz")
    return status, json.loads(body) if status else {}


def wait_for(check: Callable[[], bool], timeout_s: float, what: str, every_s: float = 0.1) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(every_s)
