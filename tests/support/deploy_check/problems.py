"""One finding of the deployment checks, and reading the files they look at."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class Problem:
    """A located finding: ``code`` is stable (tests assert on it), ``where`` names the file and
    the object or path inside it, ``message`` says what is wrong in words."""

    code: str
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.code}: {self.message}"


def shown(path: Path, root: Path | None = None) -> str:
    """``path`` relative to ``root`` (or the working directory) when it is inside it."""
    for base in (root, Path.cwd()):
        if base is not None:
            try:
                return str(path.resolve().relative_to(base.resolve()))
            except ValueError:
                pass
    return str(path)


def json_path(parts: Any) -> str:
    """``spec.template.spec.containers[0].image`` from a jsonschema error path."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top)"


def load_yaml(path: Path, problems: list[Problem], code: str) -> Any:
    """The one YAML document in ``path``; None (and a problem) when it cannot be read."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        problems.append(Problem(code, shown(path), f"cannot read it: {error}"))
        return None


def load_yaml_all(path: Path, problems: list[Problem], code: str) -> list[Any]:
    """Every non-empty YAML document in ``path``."""
    try:
        return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    except (OSError, yaml.YAMLError) as error:
        problems.append(Problem(code, shown(path), f"cannot read it: {error}"))
        return []


def read_env_file(path: Path) -> dict[str, str]:
    """``NAME=value`` lines of an env file (comments and blank lines skipped, no interpolation)."""
    values: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip().strip("'\"")
    return values
