"""Reading a Compose service: its role, mounts, environment and durations, as Compose reads them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tests.support.deploy_check.pods import device_of
from tests.support.deploy_check.problems import read_env_file

DURATION = re.compile(r"(\d+(?:\.\d+)?)(us|ms|s|m|h)")
DURATION_S = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration_s(text: str) -> float | None:
    """A Compose duration (``1m30s``, ``90s``, ``500ms``) in seconds."""
    if not text or DURATION.sub("", text):
        return None
    return sum(float(n) * DURATION_S[unit] for n, unit in DURATION.findall(text))


def role(service: dict[str, Any]) -> tuple[str, str | None] | None:
    command = service.get("command")
    argv = command.split() if isinstance(command, str) else [str(c) for c in command or []]
    if argv[:1] == ["planner"]:
        return "planner", None
    if argv[:1] == ["worker"]:
        return "worker", device_of(argv)
    return None


def mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of each volume entry, short or long syntax."""
    found = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, str):
            parts = volume.split(":")
            found.append((parts[0], parts[1]) if len(parts) > 1 else ("", parts[0]))
        elif isinstance(volume, dict):
            found.append((str(volume.get("source", "")), str(volume.get("target", ""))))
    return found


def environment_of(service: dict[str, Any], deploy_dir: Path) -> dict[str, str]:
    """The variables a container gets: its env files, then ``environment`` (which wins)."""
    values: dict[str, str] = {}
    files = service.get("env_file") or []
    for name in [files] if isinstance(files, str) else files:
        if (deploy_dir / name).is_file():
            values.update(read_env_file(deploy_dir / name))
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) if "=" in item else (item, "") for item in environment)
    values.update({k: "" if v is None else str(v) for k, v in environment.items()})
    return values
